//! A stable fuzzing harness for the parsers that take client input: `where`, `sort` and the REST
//! query string (with its projection). cargo-fuzz needs a nightly toolchain, which this project's
//! CI does not have; this harness runs on stable inside `cargo test`: it mutates the committed
//! corpus (`fuzz/corpus`) with random byte flips, insertions, deletions, splices and JSON tokens
//! for a fixed number of rounds, and checks that every input is answered — parsed or refused as
//! INVALID_ARGUMENT — and never panics. `JOBTRACK_FUZZ_ROUNDS` sets the rounds (default 100,000
//! per target, a couple of seconds); a failing input is printed so it can join the corpus.
//!
//! Beside it, property tests generate valid `where` documents from the query grammar, parse them,
//! render the filter back to a `where` ([`Filter::to_where`](crate::domain::query::Filter::to_where))
//! and check that it parses to the same filter, for both resources.

#[cfg(test)]
mod tests {
    use crate::domain::Job;
    use crate::domain::query::{ListQuery, PageAt, parse_sort, parse_where};
    use crate::error::Error;
    use crate::rest::fuzz_entry as rest_query;

    /// xorshift64*: deterministic, so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "$regex",
        "$in",
        "$nin",
        "$and",
        "$or",
        "$not",
        "$exists",
        "$gt",
        "null",
        "true",
        "1e309",
        "-1",
        "\\u0000",
        "\\",
        "\"_id\"",
        "\"kube_copy_progress.stats.io_size\"",
        "(",
        ")",
        "-",
        "%",
        "%7B",
        "&",
        "=",
        "+",
        "page=",
        "max_results=",
        "projection=",
        "(?i)",
        ".*",
        "\u{10FFFF}",
        "\u{0}",
    ];

    fn corpus(prefix: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .expect("fuzz/corpus")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| std::fs::read(e.path()).expect("a corpus file"))
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no corpus for {prefix}");
        out
    }

    fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(input.len() + 1);
            match rng.below(5) {
                0 if !input.is_empty() => {
                    let i = rng.below(input.len());
                    input[i] ^= 1 << rng.below(8);
                }
                1 => input.insert(at, rng.next() as u8),
                2 if !input.is_empty() => {
                    let end = (at + 1 + rng.below(8)).min(input.len());
                    input.drain(at.min(end)..end);
                }
                3 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    let piece = other[from..(from + rng.below(16)).min(other.len())].to_vec();
                    input.splice(at..at, piece);
                }
                _ => {
                    let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                    input.splice(at..at, token.iter().copied());
                }
            }
        }
        input
    }

    fn sample_job() -> Job {
        crate::domain::NewJob {
            id: None,
            fields: crate::domain::JobFields {
                name: Some("prod-eu-1".into()),
                start_time: Some(1_598_234_357),
                ..Default::default()
            },
            state: Some(crate::domain::JobState::Running),
            activity: vec!["started".into()],
        }
        .into_job(1_598_234_357_000_000)
        .expect("a valid job")
    }

    fn rounds() -> usize {
        std::env::var("JOBTRACK_FUZZ_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(100_000)
    }

    /// Runs `target` on mutated inputs; every outcome must be Ok or INVALID_ARGUMENT, no panic.
    fn fuzz(
        prefix: &str,
        seed: u64,
        target: impl Fn(&str) -> Result<(), Error> + std::panic::RefUnwindSafe,
    ) {
        let seeds = corpus(prefix);
        let mut rng = Rng(seed);
        for round in 0..rounds() {
            let bytes = mutate(&mut rng, &seeds);
            let input = String::from_utf8_lossy(&bytes).into_owned();
            let outcome = std::panic::catch_unwind(|| target(&input));
            match outcome {
                Ok(Ok(())) | Ok(Err(Error::InvalidArgument(_))) => {}
                Ok(Err(other)) => {
                    panic!("round {round}: {input:?} gave {other:?}, not INVALID_ARGUMENT")
                }
                Err(_) => panic!("round {round}: {input:?} panicked; add it to fuzz/corpus"),
            }
        }
    }

    #[test]
    fn where_never_panics_and_refuses_only_with_invalid_argument() {
        fuzz("where", 0x9E37_79B9_7F4A_7C15, |input| {
            let filter = parse_where::<Job>(input)?;
            // Whatever parsed can be evaluated (as watchers and counts do) without panicking.
            let _ = filter.matches(&sample_job());
            Ok(())
        });
    }

    #[test]
    fn sort_never_panics_and_refuses_only_with_invalid_argument() {
        fuzz("sort", 0xD1B5_4A32_D192_ED03, |input| {
            parse_sort::<Job>(input)?;
            ListQuery::<Job>::parse("", input, 10, PageAt::Number(3), 1000, None).map(|_| ())
        });
    }

    #[test]
    fn rest_query_strings_never_panic_and_refuse_only_with_invalid_argument() {
        fuzz("query", 0x8CB9_2BA7_2F3D_8DD7, rest_query);
    }

    mod round_trip {
        use super::Rng;
        use crate::domain::query::{EnumKind, Field, Kind, Resource, parse_where};
        use crate::domain::{Job, JobState, JobType, OpType, PvcProgress, PvcState};
        use serde_json::{Map, Value as Json, json};

        /// Deepest nesting of `$and`/`$or`/`$nor`/`$not` the generator writes.
        const MAX_LEVEL: usize = 4;
        const CASES: usize = 5_000;

        const TEXTS: &[&str] = &[
            "",
            "prod-eu-1",
            "a\"b",
            "back\\slash",
            "é",
            "日本語",
            "\u{10FFFF}",
            "%7B&=+",
            " spaced ",
            "{\"$gt\":1}",
            "0123",
        ];
        const PATTERNS: &[&str] = &[
            "^prod",
            "eu-[0-9]+$",
            "a|b",
            "(?i)run",
            ".*",
            "\\d{2,}",
            "[[:alpha:]]+",
            "é+",
            "x y # a comment under x",
            "\\$regex",
        ];
        const FLAGS: &[&str] = &["i", "m", "s", "x", "imsx", "si"];

        struct Gen(Rng);

        impl Gen {
            fn pick<'a, X>(&mut self, items: &'a [X]) -> &'a X {
                &items[self.0.below(items.len())]
            }

            fn chance(&mut self, n: usize) -> bool {
                self.0.below(n) == 0
            }

            /// A query object: zero to three entries of logical operators and fields.
            fn doc<T: Resource>(&mut self, level: usize) -> Json {
                let mut doc = Map::new();
                for _ in 0..self.0.below(4) {
                    let choice = if level < MAX_LEVEL {
                        self.0.below(8)
                    } else {
                        7
                    };
                    match choice {
                        0..=2 => {
                            let key = *self.pick(&["$and", "$or", "$nor"]);
                            let list = (0..1 + self.0.below(3))
                                .map(|_| self.doc::<T>(level + 1))
                                .collect();
                            doc.insert(key.into(), Json::Array(list));
                        }
                        3 => {
                            let inner = self.doc::<T>(level + 1);
                            doc.insert("$not".into(), inner);
                        }
                        _ => {
                            let field = self.pick(T::fields());
                            let value = self.condition(field, level);
                            doc.insert(field.name.into(), value);
                        }
                    }
                }
                Json::Object(doc)
            }

            /// What a field must meet: a bare value or an object of one to three operators.
            fn condition<T>(&mut self, field: &Field<T>, level: usize) -> Json {
                if self.chance(4) {
                    return self.value_or_null(field.kind);
                }
                let mut ops = Map::new();
                for _ in 0..1 + self.0.below(3) {
                    let op = *self.pick(&[
                        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists",
                        "$not", "$regex",
                    ]);
                    let arg = match op {
                        "$eq" | "$ne" => self.value_or_null(field.kind),
                        "$in" | "$nin" => Json::Array(
                            (0..self.0.below(4))
                                .map(|_| self.value_or_null(field.kind))
                                .collect(),
                        ),
                        "$exists" => self
                            .pick(&[json!(true), json!(false), json!(0), json!(1)])
                            .clone(),
                        "$not" if level < MAX_LEVEL => match self.condition(field, level + 1) {
                            inner @ Json::Object(_) => inner,
                            _ => continue,
                        },
                        "$regex" if matches!(field.kind, Kind::Text | Kind::Enum(_)) => {
                            if self.chance(2) {
                                let flags = *self.pick(FLAGS);
                                ops.insert("$options".into(), json!(flags));
                            }
                            json!(self.pick(PATTERNS))
                        }
                        "$not" | "$regex" => continue,
                        _ => self.value(field.kind),
                    };
                    ops.insert(op.into(), arg);
                }
                if ops.is_empty() || (ops.len() == 1 && ops.contains_key("$options")) {
                    ops.remove("$options");
                    ops.insert("$exists".into(), json!(true));
                }
                Json::Object(ops)
            }

            fn value_or_null(&mut self, kind: Kind) -> Json {
                if self.chance(6) {
                    Json::Null
                } else {
                    self.value(kind)
                }
            }

            /// A valid value of the field's kind, in any of the spellings clients send.
            fn value(&mut self, kind: Kind) -> Json {
                match kind {
                    Kind::Int => match self.0.below(4) {
                        0 => json!(*self.pick(&[0, 1, -1, 42, i64::MAX, i64::MIN])),
                        1 => json!((self.0.below(1000) as f64) * 1.0), // 7.0: an integral float
                        _ => json!(self.0.next() as i64),
                    },
                    Kind::Text => json!(*self.pick(TEXTS)),
                    Kind::Time => {
                        // RFC 1123 covers the years 1970 to 9999.
                        let secs = self.0.next() % 253_402_300_800;
                        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                        json!(httpdate::fmt_http_date(at))
                    }
                    Kind::Enum(kind) => {
                        let (prefix, names): (&str, Vec<&str>) = match kind {
                            EnumKind::JobState => (
                                "JOB_STATE_",
                                JobState::ALL.iter().map(|s| s.as_str()).collect(),
                            ),
                            EnumKind::JobType => (
                                "JOB_TYPE_",
                                JobType::ALL.iter().map(|s| s.as_str()).collect(),
                            ),
                            EnumKind::PvcState => (
                                "PVC_STATE_",
                                PvcState::ALL.iter().map(|s| s.as_str()).collect(),
                            ),
                            EnumKind::OpType => {
                                ("OP_TYPE_", OpType::ALL.iter().map(|s| s.as_str()).collect())
                            }
                        };
                        let name = *self.pick(&names);
                        match self.0.below(5) {
                            0 => json!(format!("{prefix}{}", name.replace('-', "_"))),
                            1 => json!(name.replace('-', "_")),
                            2 => json!(*self.pick(&[
                                "NOPE",
                                "running",
                                "JOB_STATE_JOB_STATE_RUNNING"
                            ])),
                            _ => json!(name),
                        }
                    }
                }
            }
        }

        /// Every generated `where` parses; its rendering parses to the same filter and renders to
        /// the same text again.
        fn round_trips<T: Resource>(seed: u64) {
            let mut generate = Gen(Rng(seed));
            for case in 0..CASES {
                let text = generate.doc::<T>(0).to_string();
                let first = parse_where::<T>(&text).unwrap_or_else(|e| {
                    panic!("case {case}: the grammar wrote {text}, refused: {e}")
                });
                let rendered = first.to_where::<T>().to_string();
                let second = parse_where::<T>(&rendered).unwrap_or_else(|e| {
                    panic!("case {case}: {text} rendered as {rendered}, refused: {e}")
                });
                assert_eq!(first, second, "case {case}: {text} rendered as {rendered}");
                assert_eq!(
                    second.to_where::<T>().to_string(),
                    rendered,
                    "case {case}: rendering is not a fixed point"
                );
            }
        }

        #[test]
        fn job_filters_render_and_parse_back_to_the_same_filter() {
            round_trips::<Job>(0x2F1E_3C5A_7B9D_0E4F);
        }

        #[test]
        fn pvc_filters_render_and_parse_back_to_the_same_filter() {
            round_trips::<PvcProgress>(0x6A09_E667_F3BC_C908);
        }

        #[test]
        fn rendering_writes_one_operator_per_object_and_dates_as_rfc_1123() {
            let filter = parse_where::<Job>(
                r#"{"_created":"Mon, 24 Aug 2020 01:59:18 GMT","state":"JOB_STATE_RUNNING","name":{"$regex":"^prod","$options":"i"}}"#,
            )
            .expect("valid");
            let rendered = filter.to_where::<Job>();
            let mut fields: Vec<Json> = rendered["$and"].as_array().expect("an $and").clone();
            fields.sort_by_key(|f| f.to_string());
            assert_eq!(
                fields,
                vec![
                    json!({"$and": [
                        {"_created": {"$gte": "Mon, 24 Aug 2020 01:59:18 GMT"}},
                        {"_created": {"$lt": "Mon, 24 Aug 2020 01:59:19 GMT"}}
                    ]}),
                    json!({"name": {"$regex": "(?i)^prod"}}),
                    json!({"state": {"$eq": "RUNNING"}}),
                ]
            );
            assert_eq!(
                parse_where::<Job>(r#"{"_updated":{"$in":[]}}"#)
                    .expect("valid")
                    .to_where::<Job>(),
                json!({"_created": {"$in": []}})
            );
        }
    }
}
