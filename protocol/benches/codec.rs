//! The codec's hot path: an Enqueue frame (mode name and seven datacenter RTTs, as a
//! client in one of three regions sends) encoded into a reused buffer, then validated and
//! read field by field, as the edge does with every request.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rally_protocol::{ArchivedClientMsg, ClientMsg, DatacenterRtt, Enqueue, HEADER_LEN, decode_client, encode_client};

fn enqueue() -> ClientMsg {
    let datacenters = ["eu-west", "eu-central", "eu-north", "na-east", "na-west", "ap-southeast", "ap-northeast"];
    ClientMsg::Enqueue(Enqueue {
        request_id: 42,
        mode: "squad-5v5".into(),
        rtt_ms: datacenters
            .iter()
            .enumerate()
            .map(|(i, dc)| DatacenterRtt { datacenter: (*dc).into(), rtt_ms: 20.0 + 15.0 * i as f32 })
            .collect(),
    })
}

/// What the edge reads of an Enqueue: the request id, the mode, every RTT entry.
fn read(msg: &ArchivedClientMsg) -> (u32, usize, f32) {
    match msg {
        ArchivedClientMsg::Enqueue(e) => {
            let rtt = e.rtt_ms.iter().map(|r| r.datacenter.len() as f32 + r.rtt_ms.to_native()).sum();
            (e.request_id.to_native(), e.mode.len(), rtt)
        }
        _ => unreachable!("benchmarked with an Enqueue"),
    }
}

fn bench_codec(c: &mut Criterion) {
    let msg = enqueue();
    let mut buf = Vec::with_capacity(1024);
    encode_client(&msg, &mut buf).unwrap();
    eprintln!("enqueue frame: {} bytes", buf.len());

    let mut group = c.benchmark_group("codec/enqueue");
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            encode_client(black_box(&msg), &mut buf).unwrap();
        })
    });
    group.bench_function("validate+access", |b| b.iter(|| read(decode_client(black_box(&buf[HEADER_LEN..])).unwrap())));
    group.bench_function("encode+validate+access", |b| {
        b.iter(|| {
            buf.clear();
            encode_client(black_box(&msg), &mut buf).unwrap();
            read(decode_client(&buf[HEADER_LEN..]).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
