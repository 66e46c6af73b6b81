//! The byte-level tokenizer: one token per byte, vocabulary 256, lossless for any text.

/// Bytes in, bytes out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Vocabulary size.
    pub const VOCAB: usize = 256;

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// Text of `ids` (ids above 255 and invalid UTF-8 become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().map(|&i| u8::try_from(i).unwrap_or(b'?')).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_text() {
        let t = ByteTokenizer;
        for s in ["", "hello", "naïve — ünïcödé ✓", "a\nb\tc"] {
            assert_eq!(t.decode(&t.encode(s)), s);
        }
    }
}
