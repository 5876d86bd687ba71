//! RocketMQ's SQL92 message filter (`FilterType::SQL`): a subscription's condition over a
//! message's properties, such as `a > 5 AND b = 'x'`.
//!
//! [`SqlFilter::parse`] checks and compiles the text once; [`SqlFilter::matches`] then judges
//! each message by its properties. Language and results follow the filter of Apache
//! RocketMQ (its `filter` module, itself derived from ActiveMQ's JMS selectors), quirks
//! included, so a consumer receives here the messages a RocketMQ broker would give it.
//!
//! # Grammar
//!
//! From the loosest binding to the tightest:
//!
//! ```text
//! condition  := or
//! or         := and ( OR and )*
//! and        := equality ( AND equality )*
//! equality   := comparison ( '=' comparison | '<>' comparison | IS NULL | IS NOT NULL )*
//! comparison := unary ( ( '>' | '>=' | '<' | '<=' ) unary
//!                     | [NOT] ( CONTAINS | STARTSWITH | ENDSWITH ) string
//!                     | [NOT] BETWEEN unary AND unary
//!                     | [NOT] IN '(' string ( ',' string )* ')' )*
//! unary      := '+' unary | '-' unary | NOT unary | primary
//! primary    := string | integer | decimal | TRUE | FALSE | NULL | property | '(' or ')'
//! ```
//!
//! - Keywords are case-insensitive; property names are case-sensitive, made of ASCII
//!   letters, digits, `_` and `$`, not starting with a digit (no `.`), and never a keyword.
//! - Strings are in single quotes, `''` standing for one quote. Integers are decimal digits
//!   with an optional `L` (32-bit when they fit, 64-bit otherwise); decimals have a point or
//!   an exponent (`2.5`, `.5`, `5.`, `1e3`) and must be above zero (`0.0` is refused).
//!   Negative numbers are written with the unary minus.
//! - `--` starts a comment to the end of the line, `/* … */` a block comment.
//! - `NOT` binds tighter than any comparison: `NOT a = 'x'` means `(NOT a) = 'x'`, which
//!   never matches; write `NOT (a = 'x')`. `=`/`<>` bind looser than `>`, `BETWEEN`, `IN`…
//! - The operands of `>`, `>=`, `<`, `<=` and `BETWEEN` may not be string, boolean or NULL
//!   literals nor conditions; `= NULL` is refused (use `IS NULL`); `IN` needs a property on
//!   its left and string items; `x BETWEEN lo AND hi` with two number literals needs
//!   `lo <= hi`; the whole text must be a condition (a bare property counts, a number or a
//!   string does not).
//!
//! # Values and results
//!
//! A property's value is text, a missing property is NULL. A condition is true, false or
//! unknown, and only a true one matches. Evaluation goes left to right and stops as soon as
//! the result is known. Comparing values:
//!
//! - With `>`, `>=`, `<`, `<=` (and `BETWEEN`, which is `>=` and `<=`), two texts are both
//!   read as decimal numbers. A text against a number literal is read as that literal's type:
//!   a 32-bit integer for `5` (so `'2.5'`, `' 5'` or `'5000000000'` cannot be read), a 64-bit
//!   integer for a literal beyond 32 bits, a decimal for `5.0`. Decimals order as Java's
//!   `Double.compareTo`: `-0.0 < 0.0`, and `NaN` above everything, infinities included.
//! - With `=` and `<>`, two texts are compared exactly; a text against a number is read as
//!   above; a text against `TRUE`/`FALSE` is true when it is `true` in any case, so
//!   `a = FALSE` holds for any `a` other than `true`.
//! - A text that cannot be read as the number it is compared with stops the whole
//!   evaluation: the message does not match, whatever the rest of the condition says
//!   (RocketMQ throws, and its broker counts a throw as no match). So does `TRUE = a`
//!   when `a` is present (a Java cast error in RocketMQ).
//! - NULL: `>`-style comparisons and `IN` with NULL are unknown. `=` is lopsided: NULL on
//!   its left gives unknown, NULL only on its right gives false, NULL on both sides gives
//!   true. So with `a` missing, `a = 'x'` and `a <> 'x'` are unknown but `'x' = a` is false
//!   and `'x' <> a` true, and `a = b` is true when both are missing.
//! - `CONTAINS`, `STARTSWITH`, `ENDSWITH` and their `NOT` forms are false when the value is
//!   missing or not text, or when the searched string is empty.
//! - `AND`, `OR`, `NOT` follow three-valued logic. A property standing alone as a condition
//!   (`a`, `NOT a`, `a AND b`) is unknown when missing and false when present, so `NOT a`
//!   matches every message that has `a`.
//!
//! # Differences from RocketMQ
//!
//! Every text accepted here means what it means to RocketMQ, but some texts RocketMQ
//! accepts are refused: RocketMQ silently ignores whatever follows a complete condition
//! (`a = 1 b = 2` filters by `a = 1` alone), raftmq refuses it; and the limits below. When
//! reading property values as numbers, Java also accepts non-ASCII decimal digits in
//! integers and hexadecimal floating-point text (`0x1p3`) in decimals; here such values
//! cannot be read, so a message carrying them does not match where RocketMQ might match it.

mod eval;
mod expr;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;

use self::eval::*;
use self::expr::*;
use self::lex::*;
use self::parse::*;

/// Longest expression text, in bytes.
pub const MAX_SQL_LEN: usize = 4096;
/// Deepest nesting: parentheses, prefix operators (`NOT`, `-`, `+`) and comparisons chained
/// onto the result of a comparison (the second `=` of `a = 1 = TRUE`) each add a level.
pub const MAX_SQL_DEPTH: usize = 64;
/// Most strings in one `IN` list.
pub const MAX_IN_ITEMS: usize = 256;
/// Longest property name, in bytes.
pub const MAX_PROPERTY_NAME_LEN: usize = 255;

/// Why an SQL filter expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// Nothing but whitespace and comments.
    #[error("empty SQL expression")]
    Empty,
    /// Longer than [`MAX_SQL_LEN`] bytes.
    #[error("SQL expression is {0} bytes long, the limit is {MAX_SQL_LEN}")]
    TooLong(usize),
    /// A syntax or type error, or a limit passed, at a place in the text.
    #[error("at column {column}: {message}")]
    Invalid {
        /// Where: 1 for the first character of the text (characters, not bytes, counted
        /// from the start of the text, line breaks included).
        column: usize,
        /// What is wrong, naming the part of the text seen there.
        message: String,
    },
}

impl SqlError {
    /// The column the error names, if it names one.
    pub fn column(&self) -> Option<usize> {
        match self {
            SqlError::Invalid { column, .. } => Some(*column),
            SqlError::Empty | SqlError::TooLong(_) => None,
        }
    }
}

/// A compiled SQL92 filter: which messages a subscription wants, by their properties.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    text: String,
    root: Expr,
}

impl SqlFilter {
    /// Checks and compiles an expression, refusing what RocketMQ refuses (and a little more:
    /// see the module documentation).
    pub fn parse(text: &str) -> Result<SqlFilter, SqlError> {
        if text.len() > MAX_SQL_LEN {
            return Err(SqlError::TooLong(text.len()));
        }
        let toks = lex(text)?;
        if toks.first().is_none_or(|t| t.tok == Tok::End) {
            return Err(SqlError::Empty);
        }
        let mut parser = Parser { text, toks, pos: 0, depth: 0 };
        let node = parser.parse_or()?;
        let root = parser.condition(node)?;
        let next = parser.peek(0).clone();
        if next.tok != Tok::End {
            let seen = parser.describe(&next);
            return Err(parser
                .error(next.start, format!("unexpected {seen} after a complete condition (a missing AND or OR?)")));
        }
        Ok(SqlFilter { text: text.to_string(), root })
    }

    /// Whether a message passes: `get` gives the value of each of its properties by name
    /// (`None`: the message has no such property). The caller exposes the message's tag as
    /// the property `TAGS`, as RocketMQ does. Only a condition that comes out true matches;
    /// false, unknown and a stopped evaluation do not.
    pub fn matches<'p>(&self, get: impl Fn(&str) -> Option<&'p str>) -> bool {
        matches!(eval(&self.root, &get), Ok(Some(Value::Bool(true))))
    }

    /// The expression as given to [`SqlFilter::parse`].
    pub fn text(&self) -> &str {
        &self.text
    }
}
