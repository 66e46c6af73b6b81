//! How a policy reads and writes text: tokens of prompts and completions, where a completion ends, and
//! the answer in a completion that a task's verifier judges.
//!
//! A byte policy reads ASCII byte by byte, prompts left-padded with NUL to its window, and ends a
//! completion with a newline: the completion is the answer line. A pretrained policy reads through its
//! checkpoint's tokenizer and ends a completion with an end-of-text token, written out in the text; its
//! answer is the last `<answer>…</answer>` of the completion, or the completion's text.

use std::borrow::Cow;
use std::sync::Arc;

use genrl::env::{Task, TaskSource};
use pretrained::{Checkpoint, Message, TextTokenizer};

use crate::error::{Error, Result};

/// The padding token.
pub const PAD: u32 = 0;
/// The token that ends a byte policy's completion.
pub const END: u32 = b'\n' as u32;

/// A policy's text codec and window: shared by the policy and by the agent's checks on what its peers
/// send.
#[derive(Debug, Clone)]
pub struct TextCodec {
    kind: Kind,
    /// Most prompt tokens.
    prompt_width: usize,
    /// Most completion tokens, the end included.
    max_new: usize,
}

#[derive(Debug, Clone)]
enum Kind {
    Bytes,
    Tokenizer {
        tokenizer: Arc<TextTokenizer>,
        checkpoint: Arc<Checkpoint>,
        system: Option<String>,
        /// The text of each end-of-text token, as it ends a completion.
        ends: Vec<String>,
    },
}

impl TextCodec {
    /// Byte by byte, prompts of up to `prompt_width` bytes, completions of up to `max_new`.
    pub fn bytes(prompt_width: usize, max_new: usize) -> Self {
        Self { kind: Kind::Bytes, prompt_width, max_new }
    }

    /// Through `checkpoint`'s tokenizer, prompts of up to `prompt_width` tokens, completions of up to
    /// `max_new`; with a chat template, a prompt is the user's turn after the `system` turn (if any) and
    /// the assistant's turn opened. An error if the checkpoint names no end-of-text token.
    pub fn tokenizer(
        checkpoint: &Checkpoint,
        prompt_width: usize,
        max_new: usize,
        system: Option<String>,
    ) -> Result<Self> {
        let tokenizer = checkpoint.tokenizer()?;
        if tokenizer.eos().is_empty() {
            return Err(Error::config("policy", "the checkpoint names no end-of-text token (eos_token_id)"));
        }
        let ends = tokenizer.eos().iter().filter_map(|&id| tokenizer.decode_all(&[id]).ok()).collect();
        let kind =
            Kind::Tokenizer { tokenizer: Arc::new(tokenizer), checkpoint: Arc::new(checkpoint.clone()), system, ends };
        Ok(Self { kind, prompt_width, max_new })
    }

    /// The checkpoint a pretrained policy's codec came with.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match &self.kind {
            Kind::Bytes => None,
            Kind::Tokenizer { checkpoint, .. } => Some(checkpoint),
        }
    }

    /// Tokens of `prompt` (a byte policy's left-padded to the window); an error if it does not fit or,
    /// for a byte policy, is not ASCII.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let width = self.prompt_width;
        match &self.kind {
            Kind::Bytes => {
                if !prompt.is_ascii() || prompt.len() > width || prompt.is_empty() {
                    return Err(Error::Unreadable(format!("prompt {prompt:?} (ASCII, 1 to {width} bytes)")));
                }
                let mut ids = vec![PAD; width - prompt.len()];
                ids.extend(prompt.bytes().map(u32::from));
                Ok(ids)
            }
            Kind::Tokenizer { .. } => {
                let ids = self.prompt_tokens(prompt)?;
                if ids.is_empty() || ids.len() > width {
                    return Err(Error::Unreadable(format!("prompt {prompt:?} (1 to {width} tokens)")));
                }
                Ok(ids)
            }
        }
    }

    /// Tokens of `prompt` as the policy would read it, whatever its window: with a chat template, the
    /// `system` turn, the user's turn and the assistant's turn opened; a byte policy's bytes.
    pub fn prompt_tokens(&self, prompt: &str) -> Result<Vec<u32>> {
        match &self.kind {
            Kind::Bytes => Ok(prompt.bytes().map(u32::from).collect()),
            Kind::Tokenizer { tokenizer, system, .. } => {
                let mut chat: Vec<Message> = system.iter().map(|s| Message::new("system", s)).collect();
                chat.push(Message::new("user", prompt));
                // A rendered chat carries its own special tokens.
                Ok(match tokenizer.apply_chat_template(&chat, true)? {
                    Some(text) => tokenizer.encode(&text, false)?,
                    None => tokenizer.encode(prompt, true)?,
                })
            }
        }
    }

    /// Most prompt tokens.
    pub fn prompt_width(&self) -> usize {
        self.prompt_width
    }

    /// Tokens of a completion's text; an error if it cannot be read or is too long.
    pub fn encode_completion(&self, completion: &str) -> Result<Vec<u32>> {
        let tokens = match &self.kind {
            Kind::Bytes if completion.is_ascii() => completion.bytes().map(u32::from).collect(),
            Kind::Bytes => Vec::new(),
            Kind::Tokenizer { tokenizer, .. } => tokenizer.encode(completion, false)?,
        };
        if tokens.is_empty() || tokens.len() > self.max_new {
            return Err(Error::Unreadable(format!("completion {completion:?} (1 to {} tokens)", self.max_new)));
        }
        Ok(tokens)
    }

    /// The text of a completion's tokens (an end-of-text token written out).
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        Ok(match &self.kind {
            Kind::Bytes => tokens.iter().map(|&t| char::from(t as u8)).collect(),
            Kind::Tokenizer { tokenizer, .. } => tokenizer.decode_all(tokens)?,
        })
    }

    /// Whether `token` ends a completion.
    pub fn is_end(&self, token: u32) -> bool {
        match &self.kind {
            Kind::Bytes => token == END,
            Kind::Tokenizer { tokenizer, .. } => tokenizer.eos().contains(&token),
        }
    }

    /// Whether the policy can read `prompt` and `completion` (for shared rollouts).
    pub fn can_read(&self, prompt: &str, completion: &str) -> bool {
        self.encode_prompt(prompt).is_ok() && self.encode_completion(completion).is_ok()
    }

    /// The answer line in `completion` that a task's verifier judges: a byte policy's completion itself;
    /// for a pretrained policy, the last `<answer>…</answer>` (or the text) before its end-of-text
    /// tokens, trimmed, with a newline.
    pub fn answer<'a>(&self, completion: &'a str) -> Cow<'a, str> {
        match &self.kind {
            Kind::Bytes => Cow::Borrowed(completion),
            Kind::Tokenizer { ends, .. } => {
                let mut text = completion;
                for end in ends {
                    text = text.strip_suffix(end.as_str()).unwrap_or(text);
                }
                let answer = genrl::env::gym::extract_answer(text).unwrap_or_else(|| text.trim());
                Cow::Owned(format!("{answer}\n"))
            }
        }
    }

    /// The reward of `completion` to `task`: the verifier of `tasks` (the agent's own source) on the
    /// completion's answer.
    pub fn reward(&self, tasks: &TaskSource, task: &Task, completion: &str) -> f64 {
        tasks.reward(task, &self.answer(completion))
    }
}
