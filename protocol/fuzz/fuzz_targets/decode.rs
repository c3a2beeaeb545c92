//! Arbitrary bytes through the frame reader (pushed in two pieces) and every decoder:
//! none may panic, and whatever a decoder accepts must deserialize in full.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_protocol::rkyv::{self, rancor};
use rally_protocol::*;

fn decode_all(bytes: &[u8]) {
    if let Ok(h) = decode_hello(bytes) {
        let _: Hello = rkyv::deserialize::<_, rancor::Error>(h).expect("validated hello deserializes");
    }
    if let Ok(m) = decode_client(bytes) {
        let _: ClientMsg = rkyv::deserialize::<_, rancor::Error>(m).expect("validated message deserializes");
    }
    if let Ok(m) = decode_server(bytes) {
        let _: ServerMsg = rkyv::deserialize::<_, rancor::Error>(m).expect("validated message deserializes");
    }
    if let Ok(d) = decode_datagram(bytes) {
        let _: Datagram = rkyv::deserialize::<_, rancor::Error>(d).expect("validated datagram deserializes");
    }
}

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut reader = FrameReader::new();
    reader.push(&data[..split]);
    for piece in [&data[split..], &[][..]] {
        while let Ok(Some(frame)) = reader.next_frame() {
            let frame = frame.to_vec();
            decode_all(&frame);
        }
        reader.push(piece);
    }
});
