// Waiting in the web tests: every wait has a bound and fails with what it was waiting for, so a
// bug fails a test instead of hanging the run (the runner also gives each test a deadline:
// --test-timeout in run.mjs).

/** How long one wait may take: far more than anything takes, far less than a CI run's limit. */
export const WAIT_MS = 30_000;

/** `promise`, or a failure naming `what` after WAIT_MS. */
export async function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The items of a stream, each awaited for at most WAIT_MS. Items for which `isBeat` holds
 * (heartbeats) are skipped and do not count as progress: a stream that only beats while an item
 * is due fails here instead of waiting forever.
 */
export async function* each<T>(
  what: string,
  stream: AsyncIterable<T>,
  isBeat: (item: T) => boolean = () => false,
): AsyncGenerator<T> {
  const items = stream[Symbol.asyncIterator]();
  const nextItem = async (): Promise<IteratorResult<T>> => {
    for (;;) {
      const next = await items.next();
      if (next.done || !isBeat(next.value)) return next;
    }
  };
  try {
    for (;;) {
      const next = await within(`the next event of ${what}`, nextItem());
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await items.return?.();
  }
}
