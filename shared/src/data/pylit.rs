//! Python list literals, as pandas writes list columns into MiniOneRec CSVs.
//!
//! The reference reads these cells with `eval`; we parse the subset that occurs (lists of `str`
//! or `int`) with a small hand-written parser that never panics, and write them back exactly as
//! Python's `repr` does so that re-written files are byte-compatible.

use std::fmt;

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// Why a literal did not parse, and at which character (0-based) of the cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralError {
    /// 0-based character offset of the problem within the cell.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LiteralError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.offset + 1, self.message)
    }
}

impl std::error::Error for LiteralError {}

struct Cursor<'a> {
    chars: Vec<char>,
    pos: usize,
    _src: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            chars: src.chars().collect(),
            pos: 0,
            _src: src,
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, LiteralError> {
        Err(LiteralError {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: char) -> Result<(), LiteralError> {
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => self.err(format!("expected `{want}`, found `{c}`")),
            None => self.err(format!("expected `{want}`, found end of input")),
        }
    }

    /// Parse `[elem, elem, ...]` with an optional trailing comma.
    fn list<T>(
        &mut self,
        mut elem: impl FnMut(&mut Self) -> Result<T, LiteralError>,
    ) -> Result<Vec<T>, LiteralError> {
        self.skip_ws();
        self.expect('[')?;
        let mut out = Vec::new();
        self.skip_ws();
        if self.peek() == Some(']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                out.push(elem(self)?);
                self.skip_ws();
                match self.bump() {
                    Some(',') => {
                        self.skip_ws();
                        if self.peek() == Some(']') {
                            self.pos += 1;
                            break;
                        }
                    }
                    Some(']') => break,
                    Some(c) => {
                        self.pos -= 1;
                        return self.err(format!("expected `,` or `]`, found `{c}`"));
                    }
                    None => return self.err("unterminated list: missing `]`"),
                }
            }
        }
        self.skip_ws();
        if let Some(c) = self.peek() {
            return self.err(format!("unexpected `{c}` after the list"));
        }
        Ok(out)
    }

    fn string(&mut self) -> Result<String, LiteralError> {
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            Some(c) => return self.err(format!("expected a quoted string, found `{c}`")),
            None => return self.err("expected a quoted string, found end of input"),
        };
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                self.pos = start;
                return self.err("unterminated string");
            };
            match c {
                c if c == quote => return Ok(out),
                '\n' => {
                    self.pos -= 1;
                    return self.err("newline inside a string literal");
                }
                '\\' => self.escape(&mut out)?,
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), LiteralError> {
        let at = self.pos - 1;
        let Some(c) = self.bump() else {
            return self.err("backslash at end of input");
        };
        match c {
            '\n' => {} // line continuation
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            'x' => out.push(self.hex_escape(2, at)?),
            'u' => out.push(self.hex_escape(4, at)?),
            'U' => out.push(self.hex_escape(8, at)?),
            '0'..='7' => {
                let mut v = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            // Python keeps unknown escapes verbatim (with a DeprecationWarning).
            other => {
                out.push('\\');
                out.push(other);
            }
        }
        Ok(())
    }

    fn hex_escape(&mut self, digits: usize, at: usize) -> Result<char, LiteralError> {
        let mut v: u32 = 0;
        for _ in 0..digits {
            match self.peek().and_then(|d| d.to_digit(16)) {
                Some(d) => {
                    v = v * 16 + d;
                    self.pos += 1;
                }
                None => {
                    return Err(LiteralError {
                        offset: at,
                        message: format!("truncated \\x/\\u escape: expected {digits} hex digits"),
                    })
                }
            }
        }
        char::from_u32(v).ok_or(LiteralError {
            offset: at,
            message: format!("escape U+{v:X} is not a valid character"),
        })
    }

    fn int(&mut self) -> Result<i64, LiteralError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        while matches!(self.peek(), Some('0'..='9' | '_')) {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos]
            .iter()
            .filter(|&&c| c != '_')
            .collect();
        if text.is_empty() || text == "-" || text == "+" {
            self.pos = start;
            return match self.peek() {
                Some(c) => self.err(format!("expected an integer, found `{c}`")),
                None => self.err("expected an integer, found end of input"),
            };
        }
        text.parse().map_err(|_| LiteralError {
            offset: start,
            message: format!("integer `{text}` out of range"),
        })
    }
}

/// Parse a Python list of strings, e.g. `['a', "b's"]`.
pub fn parse_str_list(cell: &str) -> Result<Vec<String>, LiteralError> {
    Cursor::new(cell).list(Cursor::string)
}

/// Parse a Python list of integers, e.g. `[3437, 642]`.
pub fn parse_int_list(cell: &str) -> Result<Vec<i64>, LiteralError> {
    Cursor::new(cell).list(Cursor::int)
}

/// Python's `str.isprintable()` for one character.
fn is_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Other | GeneralCategoryGroup::Separator
    )
}

/// Python's `repr()` of a `str`: single quotes unless the text has `'` and no `"`.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a list of `str`.
pub fn repr_str_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| repr_str(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// Python's `repr()` of a list of `int`.
pub fn repr_int_list<I: fmt::Display>(items: &[I]) -> String {
    let parts: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_pandas_cells() {
        assert_eq!(
            parse_str_list(r#"['a', "it's", 'say \'hi\'', 'back\\slash']"#).unwrap(),
            ["a", "it's", "say 'hi'", "back\\slash"]
        );
        assert_eq!(parse_str_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(parse_str_list(" ['x',] ").unwrap(), ["x"]);
        assert_eq!(
            parse_str_list(r"['\xa0\u00e9\U0001F600\n\t\101']").unwrap(),
            ["\u{a0}é😀\n\tA"]
        );
        assert_eq!(parse_int_list("[3437, 642]").unwrap(), [3437, 642]);
        assert_eq!(parse_int_list("[-1,+2, 1_000]").unwrap(), [-1, 2, 1000]);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = parse_str_list("['a' 'b']").unwrap_err();
        assert_eq!(e.offset, 5);
        let e = parse_str_list("['abc").unwrap_err();
        assert_eq!(e.offset, 1);
        assert!(e.message.contains("unterminated"));
        assert!(parse_str_list("['a'] x").is_err());
        assert!(parse_str_list("[a]").is_err());
        assert!(parse_str_list(r"['\x4']").is_err());
        assert!(parse_str_list(r"['\ud800']").is_err());
        assert!(parse_int_list("[1, x]").is_err());
        assert!(parse_int_list("[99999999999999999999]").is_err());
        assert!(parse_int_list("[").is_err());
        assert!(parse_int_list("").is_err());
    }

    #[test]
    fn repr_matches_python() {
        // Expected strings produced by CPython 3.11 `repr`.
        assert_eq!(repr_str("abc"), "'abc'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(repr_str("a\\b\n"), "'a\\\\b\\n'");
        assert_eq!(
            repr_str("\u{a0}é\u{ad}\u{200b}😀"),
            "'\\xa0é\\xad\\u200b😀'"
        );
        assert_eq!(repr_str("\u{7f}\u{1}"), "'\\x7f\\x01'");
        assert_eq!(repr_str_list(&["a", "b'c"]), "['a', \"b'c\"]");
        assert_eq!(repr_int_list(&[1, 22]), "[1, 22]");
        assert_eq!(repr_int_list::<u32>(&[]), "[]");
    }

    proptest! {
        #[test]
        fn str_list_round_trips(items in proptest::collection::vec(any::<String>(), 0..6)) {
            let cell = repr_str_list(&items);
            prop_assert_eq!(parse_str_list(&cell).unwrap(), items);
        }

        #[test]
        fn int_list_round_trips(items in proptest::collection::vec(any::<i64>(), 0..6)) {
            prop_assert_eq!(parse_int_list(&repr_int_list(&items)).unwrap(), items);
        }

        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse_str_list(&s);
            let _ = parse_int_list(&s);
        }

        #[test]
        fn never_panics_on_near_misses(s in r#"\[[ '"\\a-z0-9,xuU\]]{0,20}"#) {
            let _ = parse_str_list(&s);
            let _ = parse_int_list(&s);
        }
    }
}
