//! Splitting a filter's text into tokens, and errors that name the column.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
    Not,
    And,
    Or,
    Between,
    In,
    True,
    False,
    Null,
    Is,
    Contains,
    StartsWith,
    EndsWith,
}

impl Keyword {
    const ALL: [(&'static str, Keyword); 12] = [
        ("NOT", Keyword::Not),
        ("AND", Keyword::And),
        ("OR", Keyword::Or),
        ("BETWEEN", Keyword::Between),
        ("IN", Keyword::In),
        ("TRUE", Keyword::True),
        ("FALSE", Keyword::False),
        ("NULL", Keyword::Null),
        ("IS", Keyword::Is),
        ("CONTAINS", Keyword::Contains),
        ("STARTSWITH", Keyword::StartsWith),
        ("ENDSWITH", Keyword::EndsWith),
    ];

    pub(super) fn from_word(word: &str) -> Option<Keyword> {
        Self::ALL.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)).map(|&(_, k)| k)
    }

    pub(super) fn name(self) -> &'static str {
        Self::ALL.iter().find(|&&(_, k)| k == self).map_or("?", |&(w, _)| w)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Keyword(Keyword),
    Ident,
    /// A string literal, decoded.
    Str(String),
    /// An integer literal (its text is the token's span).
    Integer,
    /// A decimal literal (its text is the token's span).
    Float,
    Equal,
    NotEqual,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    Open,
    Close,
    Comma,
    Plus,
    Minus,
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Byte offsets of the token's text.
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The 1-based character column of a byte offset.
pub(super) fn column(text: &str, at: usize) -> usize {
    text.get(..at).map_or(at, |s| s.chars().count()) + 1
}

pub(super) fn invalid(text: &str, at: usize, message: impl Into<String>) -> SqlError {
    SqlError::Invalid { column: column(text, at), message: message.into() }
}

/// A piece of the text for an error message, shortened if long.
pub(super) fn snippet(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX { s.to_string() } else { format!("{}...", s.chars().take(MAX - 3).collect::<String>()) }
}

/// Splits the text into tokens, ending with [`Tok::End`]. Like RocketMQ's generated lexer,
/// each token is the longest that fits, a keyword winning over a property name of the
/// same text.
pub(super) fn lex(text: &str) -> Result<Vec<Token>, SqlError> {
    let b = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let start = i;
        let next = b.get(i + 1).copied();
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                // To the end of the line. RocketMQ needs the line break; without one it
                // reads two minus signs, which cannot follow a complete condition and which
                // it then ignores, so a comment at the very end means the same to both.
                i = text[i..].find(['\n', '\r']).map_or(b.len(), |n| i + n + 1);
                continue;
            }
            b'/' if next == Some(b'*') => match text[i + 2..].find("*/") {
                Some(n) => {
                    i += 2 + n + 2;
                    continue;
                }
                None => return Err(invalid(text, start, "unterminated comment: '/*' without '*/'")),
            },
            b'\'' => {
                let (s, end) = lex_string(text, start)?;
                i = end;
                Tok::Str(s)
            }
            b'0'..=b'9' => {
                let (tok, end) = lex_number(b, start);
                i = end;
                tok
            }
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) => {
                let (tok, end) = lex_number(b, start);
                i = end;
                tok
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' => {
                i += b[i..].iter().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$')).count();
                if i - start > MAX_PROPERTY_NAME_LEN {
                    return Err(invalid(
                        text,
                        start,
                        format!("property name is {} bytes long, the limit is {MAX_PROPERTY_NAME_LEN}", i - start),
                    ));
                }
                Keyword::from_word(&text[start..i]).map_or(Tok::Ident, Tok::Keyword)
            }
            b'=' => {
                i += 1;
                Tok::Equal
            }
            b'<' => match next {
                Some(b'>') => {
                    i += 2;
                    Tok::NotEqual
                }
                Some(b'=') => {
                    i += 2;
                    Tok::LessEqual
                }
                _ => {
                    i += 1;
                    Tok::Less
                }
            },
            b'>' => {
                if next == Some(b'=') {
                    i += 2;
                    Tok::GreaterEqual
                } else {
                    i += 1;
                    Tok::Greater
                }
            }
            b'(' | b')' | b',' | b'+' | b'-' => {
                i += 1;
                match c {
                    b'(' => Tok::Open,
                    b')' => Tok::Close,
                    b',' => Tok::Comma,
                    b'+' => Tok::Plus,
                    _ => Tok::Minus,
                }
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(invalid(text, start, format!("unexpected character {ch:?}")));
            }
        };
        toks.push(Token { tok, start, end: i });
    }
    toks.push(Token { tok: Tok::End, start: b.len(), end: b.len() });
    Ok(toks)
}

/// A string literal from the quote at `start`: its decoded text and the offset after it.
pub(super) fn lex_string(text: &str, start: usize) -> Result<(String, usize), SqlError> {
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        let Some(n) = text[i..].find('\'') else {
            return Err(invalid(text, start, "unterminated string: the quote opened here is never closed"));
        };
        out.push_str(&text[i..i + n]);
        let quote = i + n;
        if text.as_bytes().get(quote + 1) == Some(&b'\'') {
            out.push('\'');
            i = quote + 2;
        } else {
            return Ok((out, quote + 1));
        }
    }
}

/// A number from `start` (a digit, or a point before a digit): RocketMQ's longest match
/// between an integer (`0`, or a non-zero digit, digits and an optional `L`) and a decimal
/// (digits, a point, digits, an exponent, with digits on at least one side of the point;
/// or digits and an exponent).
pub(super) fn lex_number(b: &[u8], start: usize) -> (Tok, usize) {
    let digits =
        |from: usize| from + b.get(from..).map_or(0, |rest| rest.iter().take_while(|c| c.is_ascii_digit()).count());
    let exponent = |from: usize| -> Option<usize> {
        if !matches!(b.get(from), Some(b'e' | b'E')) {
            return None;
        }
        let mut j = from + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let end = digits(j);
        (end > j).then_some(end)
    };
    let int_end = digits(start);
    if b.get(int_end) == Some(&b'.') {
        let end = digits(int_end + 1);
        return (Tok::Float, exponent(end).unwrap_or(end));
    }
    if let Some(end) = exponent(int_end) {
        return (Tok::Float, end);
    }
    if b.get(start) == Some(&b'0') {
        // "0" is a whole literal: "012" is the literals 0 and 12.
        return (Tok::Integer, start + 1);
    }
    let end = if matches!(b.get(int_end), Some(b'l' | b'L')) { int_end + 1 } else { int_end };
    (Tok::Integer, end)
}
