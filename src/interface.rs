//! The names of the public interface, each spelled once: the RPCs of the gRPC API ([`Rpc`]), the
//! routes of the REST gateway ([`Route`]) and the transports a call can arrive by
//! ([`Transport`]). Logs, metrics and activity lines use these, never strings or positions.

/// An RPC of `jobtrack.v1.JobService`, `AccessService` or `SubscriptionService`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    CreateJob,
    GetJob,
    ListJobs,
    UpdateJob,
    DeleteJob,
    CancelJob,
    WatchJob,
    WatchJobs,
    ReportPvcProgress,
    GetPvcProgress,
    ListPvcProgress,
    GetCaller,
    CreateSubscription,
    GetSubscription,
    ListSubscriptions,
    DeleteSubscription,
    ListDeliveries,
}

impl Rpc {
    pub const ALL: [Rpc; 17] = [
        Rpc::CreateJob,
        Rpc::GetJob,
        Rpc::ListJobs,
        Rpc::UpdateJob,
        Rpc::DeleteJob,
        Rpc::CancelJob,
        Rpc::WatchJob,
        Rpc::WatchJobs,
        Rpc::ReportPvcProgress,
        Rpc::GetPvcProgress,
        Rpc::ListPvcProgress,
        Rpc::GetCaller,
        Rpc::CreateSubscription,
        Rpc::GetSubscription,
        Rpc::ListSubscriptions,
        Rpc::DeleteSubscription,
        Rpc::ListDeliveries,
    ];

    /// The method's name, as in the proto.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::CreateJob => "CreateJob",
            Rpc::GetJob => "GetJob",
            Rpc::ListJobs => "ListJobs",
            Rpc::UpdateJob => "UpdateJob",
            Rpc::DeleteJob => "DeleteJob",
            Rpc::CancelJob => "CancelJob",
            Rpc::WatchJob => "WatchJob",
            Rpc::WatchJobs => "WatchJobs",
            Rpc::ReportPvcProgress => "ReportPvcProgress",
            Rpc::GetPvcProgress => "GetPvcProgress",
            Rpc::ListPvcProgress => "ListPvcProgress",
            Rpc::GetCaller => "GetCaller",
            Rpc::CreateSubscription => "CreateSubscription",
            Rpc::GetSubscription => "GetSubscription",
            Rpc::ListSubscriptions => "ListSubscriptions",
            Rpc::DeleteSubscription => "DeleteSubscription",
            Rpc::ListDeliveries => "ListDeliveries",
        }
    }
}

/// A route of the REST gateway; `Other` is every request outside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Jobs,
    Job,
    Cancel,
    PvcProgressList,
    PvcProgressItem,
    ApiDocs,
    Other,
}

impl Route {
    /// Every route with its path pattern, as the router matches it (without a trailing slash).
    pub const PATTERNS: [(Route, &'static str); 6] = [
        (Route::Jobs, "/api/v1/jobs"),
        (Route::Job, "/api/v1/jobs/{id}"),
        (Route::Cancel, "/api/v1/jobs/{id}/action/cancel"),
        (Route::PvcProgressList, "/api/v1/kubepvcprogress"),
        (Route::PvcProgressItem, "/api/v1/kubepvcprogress/{id}"),
        (Route::ApiDocs, "/api-docs"),
    ];

    /// The route of a matched path pattern (with or without its trailing slash).
    pub fn of_pattern(pattern: &str) -> Route {
        let pattern = pattern.trim_end_matches('/');
        Route::PATTERNS
            .iter()
            .find(|(_, p)| *p == pattern)
            .map_or(Route::Other, |(route, _)| *route)
    }

    /// The route's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Route::Jobs => "jobs",
            Route::Job => "job",
            Route::Cancel => "cancel",
            Route::PvcProgressList => "kubepvcprogress",
            Route::PvcProgressItem => "kubepvcprogress_item",
            Route::ApiDocs => "api_docs",
            Route::Other => "other",
        }
    }
}

/// How a call arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Grpc,
    /// gRPC-web (browsers), over HTTP/1.1 or HTTP/2.
    GrpcWeb,
    Rest,
    /// Server-Sent Events: the watch over plain HTTP.
    Sse,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Grpc,
        Transport::GrpcWeb,
        Transport::Rest,
        Transport::Sse,
    ];

    /// As people write it ("an anonymous gRPC-web client").
    pub fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "gRPC",
            Transport::GrpcWeb => "gRPC-web",
            Transport::Rest => "REST",
            Transport::Sse => "SSE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_their_patterns_with_or_without_a_slash() {
        for (route, pattern) in Route::PATTERNS {
            assert_eq!(Route::of_pattern(pattern), route);
            assert_eq!(Route::of_pattern(&format!("{pattern}/")), route);
        }
        assert_eq!(Route::of_pattern("/nope"), Route::Other);
    }
}
