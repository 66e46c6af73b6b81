//! A checkpoint's tokenizer (`tokenizer.json`, read with the `tokenizers` crate), its end-of-text
//! tokens and chat template.

use std::path::Path;

use serde_json::Value;

use crate::config::token_ids;
use crate::error::{Error, Result};

/// Text to token ids and back, with the ids that end a generation and the chat template.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    eos: Vec<u32>,
    chat: Option<ChatTemplate>,
}

/// A chat template compiled, with the special tokens it may print.
#[derive(Debug, Clone)]
struct ChatTemplate {
    source: String,
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// One turn of a chat: `system`, `user` or `assistant`, and its text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// Who speaks.
    pub role: String,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A turn of `role`.
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_owned(), content: content.to_owned() }
    }
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
        let chat = match read_json(&config)? {
            Some(json) => match json.get("chat_template") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(ChatTemplate::compile(t, &json, &config)?),
                Some(_) => {
                    return Err(Error::field(&config, "chat_template", "not a string (named templates are not read)"));
                }
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
        Ok(Self { inner, eos, chat })
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
        self.chat.as_ref().map(|c| c.source.as_str())
    }

    /// `messages` rendered by the chat template, the assistant's turn opened after them when
    /// `add_generation_prompt`; `None` when the tokenizer has no template. An error names what the
    /// template raised or could not render.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Option<String>> {
        let Some(chat) = &self.chat else { return Ok(None) };
        let template = chat.env.get_template("chat").map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        let rendered = template
            .render(minijinja::context! {
                messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => chat.bos_token.as_str(),
                eos_token => chat.eos_token.as_str(),
            })
            .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        Ok(Some(rendered))
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

impl ChatTemplate {
    /// Compiles `source`, the chat template of `config` (a `tokenizer_config.json` read from `path`):
    /// Jinja as Hugging Face renders it, with Python's string methods and `raise_exception`.
    fn compile(source: &str, config: &Value, path: &Path) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source.to_owned()).map_err(|e| Error::field(path, "chat_template", e))?;
        // A special token is written as a string or as an object with its `content`.
        let token = |key: &str| match config.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        Ok(Self { source: source.to_owned(), env, bos_token: token("bos_token"), eos_token: token("eos_token") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_templates_render_as_jinja_with_python_methods_and_raise() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::file("tempdir", e))?;
        crate::tiny::write(dir.path(), crate::Architecture::Qwen2, 0)?;
        let template = r#"{%- set ns = namespace(system=false) -%}
{%- for m in messages -%}
{%- if m.role not in ["system", "user", "assistant"] %}{{ raise_exception("role " ~ m.role) }}{% endif -%}
{%- if loop.first and m.role == "system" %}{% set ns.system = true %}{% endif -%}
{{ bos_token }}{{ m.role }}: {{ m.content.strip() }}{{ eos_token }}
{% endfor -%}
{%- if not ns.system %}(no system){% endif -%}
{%- if add_generation_prompt %}{{ bos_token }}assistant: {% endif -%}"#;
        let config = serde_json::json!({
            "chat_template": template, "bos_token": "<s>", "eos_token": {"content": "<|endoftext|>"}
        });
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string())
            .map_err(|e| Error::file("tokenizer_config.json", e))?;
        let tokenizer = TextTokenizer::read(dir.path(), &[2])?;
        let messages = [Message::new("system", " Be brief. "), Message::new("user", "37-52=")];
        let text = tokenizer.apply_chat_template(&messages, true)?.unwrap_or_default();
        assert_eq!(text, "<s>system: Be brief.<|endoftext|>\n<s>user: 37-52=<|endoftext|>\n<s>assistant: ");
        let open = tokenizer.apply_chat_template(&messages[1..], false)?.unwrap_or_default();
        assert_eq!(open, "<s>user: 37-52=<|endoftext|>\n(no system)");
        // The special tokens in the rendered text read back as their ids.
        let ids = tokenizer.encode(&text, false)?;
        assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2);
        let e = tokenizer.apply_chat_template(&[Message::new("tool", "x")], true).expect_err("raised").to_string();
        assert!(e.contains("role tool"), "{e}");
        // A template that does not compile is named with its file.
        let bad = serde_json::json!({ "chat_template": "{% for m in messages %}" });
        std::fs::write(dir.path().join("tokenizer_config.json"), bad.to_string())
            .map_err(|e| Error::file("tokenizer_config.json", e))?;
        let e = TextTokenizer::read(dir.path(), &[2]).expect_err("bad template").to_string();
        assert!(e.contains("tokenizer_config.json: chat_template"), "{e}");
        Ok(())
    }
}
