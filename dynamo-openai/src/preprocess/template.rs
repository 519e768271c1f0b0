//! Chat templates: the model's Jinja template that turns a conversation into one prompt,
//! rendered with minijinja the way Hugging Face's `apply_chat_template` renders it.
//!
//! The environment matches what Hugging Face templates expect: `trim_blocks` and
//! `lstrip_blocks` on; Python string methods (`.strip()`, `.startswith()`, …); the filter
//! `tojson`; the globals `raise_exception(message)` (the render fails with the message, and the
//! client gets a 400) and `strftime_now(format)`; and the variables `messages`, `tools`,
//! `add_generation_prompt`, `bos_token` and `eos_token`.

use std::sync::Arc;

use minijinja::value::Serde;
use minijinja::{Environment, ErrorKind, Value, context};
use serde::Serialize;

use crate::Error;

/// A compiled chat template.
///
/// ```
/// use dynamo_openai::ChatTemplate;
/// use serde_json::json;
///
/// let template = ChatTemplate::new(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}\
///      {% if add_generation_prompt %}<|assistant|>{% endif %}",
/// )?;
/// let messages = [json!({"role": "user", "content": " Hi! "})];
/// let prompt = template.render(&messages, None, true)?;
/// assert_eq!(prompt, "<|user|>Hi!\n<|assistant|>");
/// # Ok::<(), dynamo_openai::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compile `source`. A template that does not compile gives [`Error::Template`].
    pub fn new(source: impl Into<String>) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_syntax(hugging_face_syntax().map_err(Error::template)?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, source.into())
            .map_err(Error::template)?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            bos_token: String::new(),
            eos_token: String::new(),
        })
    }

    /// Set the `bos_token` and `eos_token` variables some templates print.
    pub fn with_special_tokens(mut self, bos: impl Into<String>, eos: impl Into<String>) -> Self {
        self.bos_token = bos.into();
        self.eos_token = eos.into();
        self
    }

    /// Render a conversation. `messages` and `tools` are anything serialisable in the OpenAI
    /// shapes (`{"role", "content", …}`). A render that fails (an undefined method, a call to
    /// `raise_exception`) gives [`Error::Template`].
    pub fn render(
        &self,
        messages: &[impl Serialize],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let template = self.env.get_template(NAME).map_err(Error::template)?;
        template
            .render(context! {
                messages => Value::from(Serde(messages)),
                tools => tools.map(|tools| Value::from(Serde(tools))),
                add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(Error::template)
    }
}

/// Hugging Face renders chat templates with `trim_blocks` and `lstrip_blocks` on.
fn hugging_face_syntax() -> Result<minijinja::syntax::SyntaxConfig, minijinja::Error> {
    minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)` for the formats templates use: `%Y %m %d %H %M %S %b %B %A %a %%`.
fn strftime_now(format: String) -> String {
    let seconds = crate::unix_seconds();
    strftime(&format, seconds)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

/// Format Unix `seconds` (UTC).
fn strftime(format: &str, seconds: u64) -> String {
    let days = seconds / 86_400;
    let (year, month, day) = civil_from_days(days);
    let of_day = seconds % 86_400;
    let month_name = MONTHS[(month - 1) as usize];
    let weekday = WEEKDAYS[(days % 7) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('H') => out.push_str(&format!("{:02}", of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", of_day % 60)),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Year, month (1–12) and day (1–31) of the day `days` after 1970-01-01 (Howard Hinnant's
/// civil-from-days algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formats_dates_like_strftime() {
        // 2026-11-24 12:34:56 UTC, a Tuesday.
        let seconds = 1_795_523_696;
        assert_eq!(strftime("%d %b %Y", seconds), "24 Nov 2026");
        assert_eq!(
            strftime("%A, %B %d %H:%M:%S %%", seconds),
            "Tuesday, November 24 12:34:56 %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let template = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}ok",
        )
        .expect("compiles");
        let error = template
            .render(&[json!({"role": "assistant", "content": "x"})], None, false)
            .expect_err("raises");
        assert!(error.to_string().contains("user first"), "{error}");
        let Error::Template { message, .. } = &error else {
            panic!("a template error: {error:?}");
        };
        assert!(message.contains("user first"), "{error}");
        let source = std::error::Error::source(&error).expect("the engine's error");
        assert!(source.to_string().contains("user first"), "{source}");
        assert!(
            source.downcast_ref::<minijinja::Error>().is_some(),
            "{source:?}"
        );
    }

    #[test]
    fn hugging_face_idioms_render() {
        let template = ChatTemplate::new(
            "{%- for m in messages %}\n  {{- m.role | upper }}: {{ m.content.strip() }}\n\
             {% endfor %}{{ tools | tojson }}",
        )
        .expect("compiles");
        let rendered = template
            .render(
                &[json!({"role": "user", "content": "  hi  "})],
                Some(&[json!({"name": "f"})]),
                false,
            )
            .expect("renders");
        // Python's `json.dumps` spacing, as Hugging Face renders it.
        assert_eq!(rendered, "USER: hi\n[{\"name\": \"f\"}]");
    }
}
