//! Feeds arbitrary bytes, split at arbitrary points, through the frame decoder and the message codec.
//! Nothing may panic, and every frame returned must respect the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use transport::{Codec, FrameDecoder, RawBytes, TensorBytes};

#[derive(Serialize, Deserialize)]
enum Message {
    Hello { name: String, round: u64 },
    Numbers(Vec<f32>),
    Blob(RawBytes),
    Tensor(TensorBytes),
    Nested(Vec<(u8, Option<String>)>),
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let codec = Codec::new(4096).expect("valid limit");
    let mut decoder = FrameDecoder::new(codec);
    for chunk in data.chunks(usize::from(split).max(1)) {
        decoder.extend(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= codec.max_frame());
                    let _ = codec.decode::<Message>(&payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
