//! What storing one accepted alert costs the embedded store: `SqliteStore::accept` of a delivery
//! with a delivery id and one run with a dedupe key (the common SIEM case), into a store that
//! already holds `PREFILL` runs, so costs that grow with the store show.

mod common;

use common::{delivery, sqlite_store};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use store::Store;

const PREFILL: usize = 20_000;

fn accept(c: &mut Criterion) {
    let (runtime, _dir, store) = sqlite_store();
    runtime.block_on(async {
        for n in 0..PREFILL {
            store.accept(&delivery(n)).await.expect("prefill");
        }
    });
    let mut next = PREFILL;
    let mut group = c.benchmark_group("sqlite");
    group.throughput(Throughput::Elements(1));
    group.bench_function("accept", |b| {
        b.iter_batched(
            || {
                next += 1;
                delivery(next)
            },
            |delivery| runtime.block_on(store.accept(&delivery)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, accept);
criterion_main!(benches);
