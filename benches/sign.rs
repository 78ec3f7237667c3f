//! Signing one row: sig alone, and sig + mp_sig (the dry-run hot path).

use criterion::{criterion_group, criterion_main, Criterion};
use midas_cancel::sign::{CancelParams, Signer};
use std::hint::black_box;

fn params() -> CancelParams<'static> {
    CancelParams {
        openid: "oVG0RBaP9w5ciBFLpReaXnYoVG2E",
        appid: "wxbe555bfc100c6eff",
        offer_id: "6037481718",
        ts: 1650766263,
        zone_id: "3_998877",
        pf: "android",
        bill_no: "INC2026112300000000123456789",
        user_ip: Some("191.250.82.172"),
        pay_item: Some("diamond_pack_60"),
    }
}

fn bench(c: &mut Criterion) {
    let signer = Signer::new("Dk8YiZIC55shxgQfgjzlDZil9IXHl2zh", false);
    let p = params();
    c.bench_function("sig", |b| b.iter(|| signer.sig(black_box(&p))));
    c.bench_function("sig+mp_sig", |b| {
        b.iter(|| signer.sign(black_box(&p), Some(("ACCESS_TOKEN_0123456789abcdef", "j3tO7epWjGLj7vGV/3+pRF=="))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
