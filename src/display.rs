//! Making a peer's text safe to put on a terminal.
//!
//! A peer controls every byte it sends. Raw, those bytes could move the cursor,
//! rewrite earlier lines (`\r`, ESC sequences), ring the bell, or reorder text
//! with bidirectional overrides. Here every such character becomes a visible
//! escape, so one message is always exactly one line that shows what was sent.

use std::borrow::Cow;
use std::fmt::Write;

/// Returns `text` with every control, line-breaking and bidi-control character
/// escaped, and backslashes doubled so the escaping is unambiguous.
///
/// Common characters use the short forms `\n`, `\r`, `\t` and `\\`; the rest
/// are written as `\x1b` (ASCII) or `\u{202e}`. Text with nothing to escape is
/// returned without copying.
pub fn escape_for_terminal(text: &str) -> Cow<'_, str> {
    if is_plain_ascii(text.as_bytes()) || !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(escaped, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Whether every byte is printable ASCII other than `\`: the common case,
/// checked 32 bytes at a time without early exit inside a block so the
/// compiler can vectorise it (a per-character test costs ~9 instructions a byte).
fn is_plain_ascii(bytes: &[u8]) -> bool {
    let plain = |b: u8| (0x20..0x7f).contains(&b) & (b != b'\\');
    let mut blocks = bytes.chunks_exact(32);
    let blocks_plain = blocks
        .by_ref()
        .all(|block| block.iter().fold(true, |all, &b| all & plain(b)));
    blocks_plain && blocks.remainder().iter().all(|&b| plain(b))
}

/// `json` with the characters a terminal could act on that JSON may hold
/// raw (C1 controls, line separators, bidirectional controls: serde_json
/// escapes only C0 and DEL is harmless there) written as `\uXXXX` escapes:
/// the same JSON value, safe to print on a terminal.
pub fn escape_json_for_terminal(json: &str) -> Cow<'_, str> {
    let risky = |c: char| c != '\\' && !c.is_ascii_control() && needs_escape(c);
    if !json.chars().any(risky) {
        return Cow::Borrowed(json);
    }
    let mut escaped = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            c if risky(c) => escaped.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_line_separator(c) || is_bidi_control(c)
}

fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// Characters that reorder surrounding text ("Trojan Source", CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_for_a_terminal_escapes_c1_and_bidi_controls_and_stays_the_same_value() {
        let json =
            serde_json::json!({"text": "csi \u{9b}31m rlo \u{202e} ok \u{1F44B} \\"}).to_string();
        let escaped = escape_json_for_terminal(&json);
        assert!(
            !escaped.contains('\u{9b}') && !escaped.contains('\u{202e}'),
            "{escaped}"
        );
        assert!(
            escaped.contains("\\u009b") && escaped.contains("\\u202e"),
            "{escaped}"
        );
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        let original: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, original);
        assert!(matches!(
            escape_json_for_terminal("{\"a\":\"b\"}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_ascii_fast_path_agrees_with_the_full_test() {
        for length in [0, 1, 31, 32, 33, 64, 100] {
            let plain = "a".repeat(length);
            assert!(is_plain_ascii(plain.as_bytes()));
            for position in 0..length {
                for odd in [b'\\', b'\x1b', b'\n', 0x7f, 0xc3] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[position] = odd;
                    assert!(
                        !is_plain_ascii(&bytes),
                        "byte {odd:#x} at {position} of {length}"
                    );
                }
            }
        }
    }

    #[test]
    fn plain_text_is_untouched_and_not_copied() {
        let text = "héllo, wörld ☕ — 你好";
        assert!(matches!(escape_for_terminal(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn escape_sequences_bells_and_carriage_returns_are_made_visible() {
        assert_eq!(
            escape_for_terminal("\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(escape_for_terminal("ok\rFAKE"), "ok\\rFAKE");
        assert_eq!(escape_for_terminal("del\x7f"), "del\\x7f");
    }

    #[test]
    fn newlines_and_tabs_keep_the_message_on_one_line() {
        assert_eq!(
            escape_for_terminal("line 1\nline 2\tend"),
            "line 1\\nline 2\\tend"
        );
        assert_eq!(escape_for_terminal("a\u{2028}b"), "a\\u{2028}b");
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_cannot_be_forged() {
        assert_eq!(escape_for_terminal("C:\\n"), "C:\\\\n");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape_for_terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape_for_terminal("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    proptest! {
        #[test]
        fn output_never_contains_control_characters(text in any::<String>()) {
            let shown = escape_for_terminal(&text);
            prop_assert!(!shown.chars().any(|c| c.is_control() || is_bidi_control(c) || is_line_separator(c)));
        }
    }
}
