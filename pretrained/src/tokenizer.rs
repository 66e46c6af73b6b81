//! A checkpoint's tokenizer (`tokenizer.json`, read with the `tokenizers` crate), its end-of-text
//! tokens and chat template.

use std::path::Path;

use serde_json::Value;

use crate::config::token_ids;
use crate::error::{Error, Result};

/// Text to token ids and back, with the ids that end a generation.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    eos: Vec<u32>,
    chat_template: Option<String>,
}

impl TextTokenizer {
    /// The tokenizer of the checkpoint in `dir`. End-of-text ids come from `generation_config.json`,
    /// else `config_eos` (the model config's); the chat template from `tokenizer_config.json`.
    pub fn read(dir: &Path, config_eos: &[u32]) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::file(&path, "missing"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::file(&path, e))?;
        let generation = dir.join("generation_config.json");
        let mut eos = config_eos.to_vec();
        if let Some(json) = read_json(&generation)?
            && let Some(v) = json.get("eos_token_id").filter(|v| !v.is_null())
        {
            eos = token_ids(v)
                .ok_or_else(|| Error::field(&generation, "eos_token_id", "not a token id or a list of them"))?;
        }
        let config = dir.join("tokenizer_config.json");
        let chat_template = match read_json(&config)? {
            Some(json) => match json.get("chat_template") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(t.clone()),
                Some(_) => return Err(Error::field(&config, "chat_template", "not a string")),
            },
            None => None,
        };
        let vocab = inner.get_vocab_size(true);
        if let Some(bad) = eos.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::field(
                &generation,
                "eos_token_id",
                format!("{bad} is outside the vocabulary of {vocab}"),
            ));
        }
        Ok(Self { inner, eos, chat_template })
    }

    /// Token ids of `text` (with the tokenizer's special tokens when `special`).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, special).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The text of `ids` with special tokens written out (an end-of-text token stays in the text, and
    /// [`encode`](Self::encode) reads it back as that token).
    pub fn decode_all(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The ids that end a generation.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Tokens known, added ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The Jinja chat template of `tokenizer_config.json`, if there is one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// The JSON object in `path`, `None` when there is no such file.
fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| Error::file(path, e))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::file(path, e)),
    }
}
