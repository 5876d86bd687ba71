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

use std::cmp::Ordering;

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

// ---------------------------------------------------------------------------------------
// Compiled form
// ---------------------------------------------------------------------------------------

/// A literal.
#[derive(Debug, Clone, PartialEq)]
enum Constant {
    Null,
    Bool(bool),
    /// An integer literal that fits in 32 bits (Java `Integer`).
    Int(i32),
    /// A larger integer literal (Java `Long`).
    Long(i64),
    /// A decimal literal (Java `Double`).
    Double(f64),
    Str(String),
}

impl Constant {
    fn value(&self) -> Option<Value<'_>> {
        match self {
            Constant::Null => None,
            Constant::Bool(b) => Some(Value::Bool(*b)),
            Constant::Int(i) => Some(Value::Int(*i)),
            Constant::Long(l) => Some(Value::Long(*l)),
            Constant::Double(d) => Some(Value::Double(*d)),
            Constant::Str(s) => Some(Value::Str(s)),
        }
    }
}

/// `>`, `>=`, `<`, `<=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
}

impl Relation {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            Relation::Greater => ord == Ordering::Greater,
            Relation::GreaterEqual => ord != Ordering::Less,
            Relation::Less => ord == Ordering::Less,
            Relation::LessEqual => ord != Ordering::Greater,
        }
    }
}

/// `CONTAINS`, `STARTSWITH`, `ENDSWITH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

impl TextOp {
    fn holds(self, text: &str, search: &str) -> bool {
        match self {
            TextOp::Contains => text.contains(search),
            TextOp::StartsWith => text.starts_with(search),
            TextOp::EndsWith => text.ends_with(search),
        }
    }
}

/// The compiled expression. Each node evaluates as the RocketMQ expression it stands for.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Property(String),
    Constant(Constant),
    /// Unary minus: the negated number, NULL for anything else.
    Negate(Box<Expr>),
    /// A property used as a condition: NULL when missing, else false unless the value is a
    /// boolean (never, for message properties).
    IsTrue(Box<Expr>),
    Not(Box<Expr>),
    /// A chain of `AND`s, flattened (left to right, as RocketMQ's left-nested pairs).
    And(Vec<Expr>),
    /// A chain of `OR`s, flattened.
    Or(Vec<Expr>),
    /// `=` (and `IS NULL`, an `=` with a NULL right side; `<>` is `NOT =`).
    Equal(Box<Expr>, Box<Expr>),
    Compare(Relation, Box<Expr>, Box<Expr>),
    /// `value >= low AND value <= high`, or, negated, `value < low OR value > high`; the
    /// value is evaluated once (RocketMQ evaluates it twice, to the same result).
    Between {
        value: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    In {
        property: String,
        items: Vec<String>,
        negated: bool,
    },
    Text {
        value: Box<Expr>,
        op: TextOp,
        search: String,
        negated: bool,
    },
}

impl Expr {
    /// Whether RocketMQ sees this as a boolean expression (a condition).
    fn is_condition(&self) -> bool {
        match self {
            Expr::Constant(c) => matches!(c, Constant::Bool(_) | Constant::Null),
            Expr::Property(_) | Expr::Negate(_) => false,
            Expr::IsTrue(_)
            | Expr::Not(_)
            | Expr::And(_)
            | Expr::Or(_)
            | Expr::Equal(..)
            | Expr::Compare(..)
            | Expr::Between { .. }
            | Expr::In { .. }
            | Expr::Text { .. } => true,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

/// A value during evaluation (NULL is `None` around it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'v> {
    Str(&'v str),
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
}

/// RocketMQ threw an exception while evaluating: the message does not match.
#[derive(Debug)]
struct Abort;

type Eval<'v> = Result<Option<Value<'v>>, Abort>;

fn eval<'v, 'e: 'v, 'p: 'v>(e: &'e Expr, get: &dyn Fn(&str) -> Option<&'p str>) -> Eval<'v> {
    Ok(match e {
        Expr::Property(name) => get(name).map(Value::Str),
        Expr::Constant(c) => c.value(),
        Expr::Negate(inner) => match eval(inner, get)? {
            // Negated values come from non-negative literals, so neither can overflow;
            // wrapping is what Java would do anyway.
            Some(Value::Int(i)) => Some(Value::Int(i.wrapping_neg())),
            Some(Value::Long(l)) => Some(Value::Long(l.wrapping_neg())),
            Some(Value::Double(d)) => Some(Value::Double(-d)),
            _ => None,
        },
        Expr::IsTrue(inner) => match eval(inner, get)? {
            None => None,
            Some(Value::Bool(b)) => Some(Value::Bool(b)),
            Some(_) => Some(Value::Bool(false)),
        },
        Expr::Not(inner) => truth(eval(inner, get)?)?.map(|b| Value::Bool(!b)),
        Expr::And(items) => logic(items, false, get)?,
        Expr::Or(items) => logic(items, true, get)?,
        Expr::Equal(l, r) => {
            let lv = eval(l, get)?;
            let rv = eval(r, get)?;
            match (lv, rv) {
                (None, None) => Some(Value::Bool(true)),
                (None, Some(_)) => None,
                (Some(_), None) => Some(Value::Bool(false)),
                (Some(a), Some(b)) => Some(Value::Bool(compare(a, b)? == Ordering::Equal)),
            }
        }
        Expr::Compare(rel, l, r) => {
            let Some(lv) = eval(l, get)? else { return Ok(None) };
            let Some(rv) = eval(r, get)? else { return Ok(None) };
            Some(Value::Bool(relation(*rel, lv, rv)?))
        }
        Expr::Between { value, low, high, negated } => {
            let v = eval(value, get)?;
            let (first_rel, second_rel) = if *negated {
                (Relation::Less, Relation::Greater)
            } else {
                (Relation::GreaterEqual, Relation::LessEqual)
            };
            // NOT BETWEEN is an OR (decided by a true side), BETWEEN an AND (by a false one).
            let decisive = *negated;
            let first = bound(first_rel, v, low, get)?;
            if first == Some(decisive) {
                return Ok(Some(Value::Bool(decisive)));
            }
            let second = bound(second_rel, v, high, get)?;
            match (first, second) {
                (_, Some(b)) if b == decisive => Some(Value::Bool(decisive)),
                (Some(_), Some(_)) => Some(Value::Bool(!decisive)),
                _ => None,
            }
        }
        Expr::In { property, items, negated } => {
            get(property).map(|v| Value::Bool(items.iter().any(|i| i == v) != *negated))
        }
        Expr::Text { value, op, search, negated } => {
            if search.is_empty() {
                return Ok(Some(Value::Bool(false)));
            }
            match eval(value, get)? {
                Some(Value::Str(s)) => Some(Value::Bool(op.holds(s, search) != *negated)),
                _ => Some(Value::Bool(false)),
            }
        }
    })
}

/// A condition's truth; a non-boolean is a Java cast error (the compiler never builds one).
fn truth(v: Option<Value<'_>>) -> Result<Option<bool>, Abort> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(Abort),
    }
}

/// An `AND` chain (`decisive` false) or an `OR` chain (`decisive` true): the first operand
/// equal to `decisive` decides; otherwise unknown if any operand was.
fn logic<'v, 'e: 'v, 'p: 'v>(items: &'e [Expr], decisive: bool, get: &dyn Fn(&str) -> Option<&'p str>) -> Eval<'v> {
    let mut unknown = false;
    for item in items {
        match truth(eval(item, get)?)? {
            Some(b) if b == decisive => return Ok(Some(Value::Bool(decisive))),
            Some(_) => {}
            None => unknown = true,
        }
    }
    Ok(if unknown { None } else { Some(Value::Bool(!decisive)) })
}

/// One side of a `BETWEEN`: the (already evaluated) value against a bound.
fn bound<'v, 'e: 'v, 'p: 'v>(
    rel: Relation,
    value: Option<Value<'v>>,
    bound: &'e Expr,
    get: &dyn Fn(&str) -> Option<&'p str>,
) -> Result<Option<bool>, Abort> {
    let Some(v) = value else { return Ok(None) };
    let Some(b) = eval(bound, get)? else { return Ok(None) };
    relation(rel, v, b).map(Some)
}

/// `>`, `>=`, `<`, `<=` on two non-NULL values: two texts are both read as decimals.
fn relation(rel: Relation, l: Value<'_>, r: Value<'_>) -> Result<bool, Abort> {
    let ord = match (l, r) {
        (Value::Str(a), Value::Str(b)) => java_double_cmp(java_double(a)?, java_double(b)?),
        _ => compare(l, r)?,
    };
    Ok(rel.holds(ord))
}

/// RocketMQ's comparison of two non-NULL values of any types: a number converts to the
/// other side's wider number type, a text to the other side's number or boolean type, and
/// unrelated types compare as "less". Two texts compare by content (only equality of texts
/// ever matters: ordered comparisons read texts as decimals first).
fn compare(l: Value<'_>, r: Value<'_>) -> Result<Ordering, Abort> {
    use Value::{Bool, Double, Int, Long, Str};
    Ok(match (l, r) {
        (Str(a), Str(b)) => a.cmp(b),
        (Bool(a), Bool(b)) => a.cmp(&b),
        (Int(a), Int(b)) => a.cmp(&b),
        (Long(a), Long(b)) => a.cmp(&b),
        (Double(a), Double(b)) => java_double_cmp(a, b),
        (Int(a), Long(b)) => i64::from(a).cmp(&b),
        (Long(a), Int(b)) => a.cmp(&i64::from(b)),
        (Int(a), Double(b)) => java_double_cmp(f64::from(a), b),
        (Double(a), Int(b)) => java_double_cmp(a, f64::from(b)),
        (Long(a), Double(b)) => java_double_cmp(a as f64, b),
        (Double(a), Long(b)) => java_double_cmp(a, b as f64),
        (Int(a), Str(b)) => a.cmp(&java_int(b)?),
        (Long(a), Str(b)) => a.cmp(&java_long(b)?),
        (Double(a), Str(b)) => java_double_cmp(a, java_double(b)?),
        (Str(a), Int(b)) => java_int(a)?.cmp(&b),
        (Str(a), Long(b)) => java_long(a)?.cmp(&b),
        (Str(a), Double(b)) => java_double_cmp(java_double(a)?, b),
        (Str(a), Bool(b)) => java_bool(a).cmp(&b),
        // RocketMQ casts the boolean to a text here and throws.
        (Bool(_), Str(_)) => return Err(Abort),
        (Bool(_), Int(_) | Long(_) | Double(_)) | (Int(_) | Long(_) | Double(_), Bool(_)) => Ordering::Less,
    })
}

/// Java's `Double.compareTo`: numeric order, except that `-0.0` is below `0.0` and NaN
/// equals itself and is above everything.
fn java_double_cmp(a: f64, b: f64) -> Ordering {
    if a < b {
        Ordering::Less
    } else if a > b {
        Ordering::Greater
    } else {
        // Equal or unordered: Java compares the bits, with every NaN made the canonical one.
        let bits = |x: f64| if x.is_nan() { f64::NAN.to_bits() as i64 } else { x.to_bits() as i64 };
        bits(a).cmp(&bits(b))
    }
}

/// Java's `Integer.valueOf(String)` (ASCII digits only).
fn java_int(s: &str) -> Result<i32, Abort> {
    s.parse().map_err(|_| Abort)
}

/// Java's `Long.valueOf(String)` (ASCII digits only).
fn java_long(s: &str) -> Result<i64, Abort> {
    s.parse().map_err(|_| Abort)
}

/// Java's `Boolean.valueOf(String)`: true for `true` in any case, false for anything else.
fn java_bool(s: &str) -> bool {
    s.eq_ignore_ascii_case("true")
}

/// Java's `Double.valueOf(String)`, hexadecimal forms excepted: surrounding control
/// characters and spaces are ignored, then an optional sign and `NaN`, `Infinity`, or
/// digits with an optional point and exponent, and an optional `f`/`F`/`d`/`D` at the end.
fn java_double(s: &str) -> Result<f64, Abort> {
    let t = s.trim_matches(|c: char| c <= ' ');
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let signed = |v: f64| if negative { -v } else { v };
    match body {
        "NaN" => return Ok(f64::NAN),
        "Infinity" => return Ok(signed(f64::INFINITY)),
        _ => {}
    }
    let body = body.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(body);
    let b = body.as_bytes();
    let digits = |from: usize| b.get(from..).map_or(0, |rest| rest.iter().take_while(|c| c.is_ascii_digit()).count());
    let mut i = digits(0);
    let mut mantissa_digits = i;
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        mantissa_digits += n;
        i += 1 + n;
    }
    if mantissa_digits == 0 {
        return Err(Abort);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return Err(Abort);
        }
        i += n;
    }
    if i != b.len() {
        return Err(Abort);
    }
    // What is left is in the syntax Rust's correctly rounded parser reads, as Java's does.
    body.parse::<f64>().map(signed).map_err(|_| Abort)
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
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

    fn from_word(word: &str) -> Option<Keyword> {
        Self::ALL.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)).map(|&(_, k)| k)
    }

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|&&(_, k)| k == self).map_or("?", |&(w, _)| w)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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
struct Token {
    tok: Tok,
    /// Byte offsets of the token's text.
    start: usize,
    end: usize,
}

/// The 1-based character column of a byte offset.
fn column(text: &str, at: usize) -> usize {
    text.get(..at).map_or(at, |s| s.chars().count()) + 1
}

fn invalid(text: &str, at: usize, message: impl Into<String>) -> SqlError {
    SqlError::Invalid { column: column(text, at), message: message.into() }
}

/// A piece of the text for an error message, shortened if long.
fn snippet(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX { s.to_string() } else { format!("{}...", s.chars().take(MAX - 3).collect::<String>()) }
}

/// Splits the text into tokens, ending with [`Tok::End`]. Like RocketMQ's generated lexer,
/// each token is the longest that fits, a keyword winning over a property name of the
/// same text.
fn lex(text: &str) -> Result<Vec<Token>, SqlError> {
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
fn lex_string(text: &str, start: usize) -> Result<(String, usize), SqlError> {
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
fn lex_number(b: &[u8], start: usize) -> (Tok, usize) {
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

// ---------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------

/// A parsed piece of the expression and the byte span of its text.
#[derive(Debug)]
struct Node {
    expr: Expr,
    start: usize,
    end: usize,
}

/// Recursive descent over RocketMQ's grammar, applying the checks RocketMQ makes while it
/// builds its expression objects. `depth` bounds the nesting, hence the recursion.
#[derive(Debug)]
struct Parser<'t> {
    text: &'t str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    /// The token `k` places ahead (the end token when past it).
    fn peek(&self, k: usize) -> &Token {
        let last = self.toks.len().saturating_sub(1);
        &self.toks[(self.pos + k).min(last)]
    }

    fn bump(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    fn at_keyword(&self, k: Keyword) -> bool {
        self.peek(0).tok == Tok::Keyword(k)
    }

    fn error(&self, at: usize, message: impl Into<String>) -> SqlError {
        invalid(self.text, at, message)
    }

    /// How a token is named in messages.
    fn describe(&self, t: &Token) -> String {
        match t.tok {
            Tok::End => "the end of the expression".to_string(),
            Tok::Str(_) => format!("the string {}", snippet(&self.text[t.start..t.end])),
            _ => format!("'{}'", snippet(&self.text[t.start..t.end])),
        }
    }

    /// How a parsed piece is named in messages.
    fn quote(&self, n: &Node) -> String {
        let text = snippet(&self.text[n.start..n.end]);
        match n.expr {
            Expr::Constant(Constant::Str(_)) => format!("the string {text}"),
            _ => format!("'{text}'"),
        }
    }

    fn unexpected(&self, t: &Token, expected: &str) -> SqlError {
        self.error(t.start, format!("{expected}, found {}", self.describe(t)))
    }

    /// One more level of nesting, refused past [`MAX_SQL_DEPTH`].
    fn enter(&mut self, at: usize) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_SQL_DEPTH {
            return Err(self.error(at, format!("the expression nests deeper than {MAX_SQL_DEPTH} levels")));
        }
        Ok(())
    }

    /// A piece used as a condition (RocketMQ's `asBooleanExpression`): conditions as they
    /// are, a property tested for being true, anything else refused.
    fn condition(&self, n: Node) -> Result<Expr, SqlError> {
        match n.expr {
            e if e.is_condition() => Ok(e),
            Expr::Property(_) => Ok(Expr::IsTrue(Box::new(n.expr))),
            _ => Err(self.error(
                n.start,
                format!("{} is not a condition: expected a comparison, a property, TRUE or FALSE", self.quote(&n)),
            )),
        }
    }

    fn parse_or(&mut self) -> Result<Node, SqlError> {
        self.parse_chain(Keyword::Or, Self::parse_and, Expr::Or)
    }

    fn parse_and(&mut self) -> Result<Node, SqlError> {
        self.parse_chain(Keyword::And, Self::parse_equality, Expr::And)
    }

    /// `operand (op operand)*`, every operand a condition when there are two or more.
    fn parse_chain(
        &mut self,
        op: Keyword,
        operand: fn(&mut Self) -> Result<Node, SqlError>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Result<Node, SqlError> {
        let first = operand(self)?;
        if !self.at_keyword(op) {
            return Ok(first);
        }
        let start = first.start;
        let mut end = first.end;
        let mut pending = Some(first);
        let mut items = Vec::new();
        while self.at_keyword(op) {
            self.bump();
            let right = operand(self)?;
            if let Some(left) = pending.take() {
                items.push(self.condition(left)?);
            }
            end = right.end;
            items.push(self.condition(right)?);
        }
        Ok(Node { expr: build(items), start, end })
    }

    fn parse_equality(&mut self) -> Result<Node, SqlError> {
        let mut left = self.parse_comparison()?;
        let outer = self.depth;
        let mut chained = false;
        loop {
            let op = self.peek(0).clone();
            let start = left.start;
            let (expr, end) = match op.tok {
                Tok::Equal | Tok::NotEqual => {
                    self.bump();
                    let right = self.parse_comparison()?;
                    self.check_equal_operand(&left)?;
                    self.check_equal_operand(&right)?;
                    self.check_equal_compatible(&left, &right)?;
                    let eq = Expr::Equal(Box::new(left.expr), Box::new(right.expr));
                    (if op.tok == Tok::NotEqual { Expr::Not(Box::new(eq)) } else { eq }, right.end)
                }
                Tok::Keyword(Keyword::Is) => {
                    self.bump();
                    let negated = self.at_keyword(Keyword::Not);
                    if negated {
                        self.bump();
                    }
                    let null = self.peek(0).clone();
                    if null.tok != Tok::Keyword(Keyword::Null) {
                        let expected =
                            if negated { "expected NULL after IS NOT" } else { "expected NULL or NOT NULL after IS" };
                        return Err(self.unexpected(&null, expected));
                    }
                    self.bump();
                    let eq = Expr::Equal(Box::new(left.expr), Box::new(Expr::Constant(Constant::Null)));
                    (if negated { Expr::Not(Box::new(eq)) } else { eq }, null.end)
                }
                _ => break,
            };
            // A comparison applied to the result of another one nests a level.
            if chained {
                self.enter(op.start)?;
            }
            chained = true;
            left = Node { expr, start, end };
        }
        self.depth = outer;
        Ok(left)
    }

    fn parse_comparison(&mut self) -> Result<Node, SqlError> {
        let mut left = self.parse_unary()?;
        let outer = self.depth;
        let mut chained = false;
        loop {
            let op = self.peek(0).clone();
            let start = left.start;
            let (expr, end) = match op.tok {
                Tok::Greater | Tok::GreaterEqual | Tok::Less | Tok::LessEqual => {
                    self.bump();
                    let right = self.parse_unary()?;
                    let rel = match op.tok {
                        Tok::Greater => Relation::Greater,
                        Tok::GreaterEqual => Relation::GreaterEqual,
                        Tok::Less => Relation::Less,
                        _ => Relation::LessEqual,
                    };
                    let symbol = &self.text[op.start..op.end];
                    self.check_ordered_operand(&left, symbol)?;
                    self.check_ordered_operand(&right, symbol)?;
                    (Expr::Compare(rel, Box::new(left.expr), Box::new(right.expr)), right.end)
                }
                Tok::Keyword(k @ (Keyword::Contains | Keyword::StartsWith | Keyword::EndsWith)) => {
                    self.bump();
                    self.parse_text_op(left, k, false)?
                }
                Tok::Keyword(Keyword::Between) => {
                    self.bump();
                    self.parse_between(left, false)?
                }
                Tok::Keyword(Keyword::In) => {
                    self.bump();
                    self.parse_in(left, false)?
                }
                Tok::Keyword(Keyword::Not) => {
                    let next = self.peek(1).clone();
                    self.bump();
                    self.bump();
                    match next.tok {
                        Tok::Keyword(k @ (Keyword::Contains | Keyword::StartsWith | Keyword::EndsWith)) => {
                            self.parse_text_op(left, k, true)?
                        }
                        Tok::Keyword(Keyword::Between) => self.parse_between(left, true)?,
                        Tok::Keyword(Keyword::In) => self.parse_in(left, true)?,
                        _ => {
                            return Err(self.unexpected(
                                &next,
                                "expected BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH after NOT",
                            ));
                        }
                    }
                }
                _ => break,
            };
            // A comparison applied to the result of another one nests a level.
            if chained {
                self.enter(op.start)?;
            }
            chained = true;
            left = Node { expr, start, end };
        }
        self.depth = outer;
        Ok(left)
    }

    fn parse_text_op(&mut self, left: Node, k: Keyword, negated: bool) -> Result<(Expr, usize), SqlError> {
        let (search, end) = self.expect_string(&format!("expected a string after {}", k.name()))?;
        let op = match k {
            Keyword::Contains => TextOp::Contains,
            Keyword::StartsWith => TextOp::StartsWith,
            _ => TextOp::EndsWith,
        };
        Ok((Expr::Text { value: Box::new(left.expr), op, search, negated }, end))
    }

    fn parse_between(&mut self, value: Node, negated: bool) -> Result<(Expr, usize), SqlError> {
        let low = self.parse_unary()?;
        let and = self.peek(0).clone();
        if and.tok != Tok::Keyword(Keyword::And) {
            return Err(self.unexpected(&and, "expected AND between the bounds of BETWEEN"));
        }
        self.bump();
        let high = self.parse_unary()?;
        if !negated {
            self.check_between_bounds(&low, &high)?;
        }
        let symbol = if negated { "NOT BETWEEN" } else { "BETWEEN" };
        self.check_ordered_operand(&value, symbol)?;
        self.check_ordered_operand(&low, symbol)?;
        self.check_ordered_operand(&high, symbol)?;
        let end = high.end;
        Ok((
            Expr::Between { value: Box::new(value.expr), low: Box::new(low.expr), high: Box::new(high.expr), negated },
            end,
        ))
    }

    /// `BETWEEN` (not `NOT BETWEEN`) with two literal bounds: neither NULL, and the lower
    /// one not above the upper one, compared as values are.
    fn check_between_bounds(&self, low: &Node, high: &Node) -> Result<(), SqlError> {
        let (Expr::Constant(l), Expr::Constant(h)) = (&low.expr, &high.expr) else { return Ok(()) };
        let (Some(lv), Some(hv)) = (l.value(), h.value()) else {
            return Err(self.error(low.start, "the bounds of BETWEEN cannot be NULL"));
        };
        match compare(hv, lv) {
            Ok(Ordering::Less) => Err(self.error(
                low.start,
                format!("BETWEEN's lower bound {} is above its upper bound {}", self.quote(low), self.quote(high)),
            )),
            Ok(_) => Ok(()),
            Err(Abort) => Err(self.error(
                low.start,
                format!("the bounds of BETWEEN {} and {} cannot be compared", self.quote(low), self.quote(high)),
            )),
        }
    }

    fn parse_in(&mut self, left: Node, negated: bool) -> Result<(Expr, usize), SqlError> {
        let open = self.peek(0).clone();
        if open.tok != Tok::Open {
            return Err(self.unexpected(&open, "expected '(' after IN"));
        }
        self.bump();
        let mut items = Vec::new();
        let end = loop {
            let at = self.peek(0).start;
            let (item, _) = self.expect_string("expected a string in the IN list")?;
            if items.len() == MAX_IN_ITEMS {
                return Err(self.error(at, format!("the IN list has more than {MAX_IN_ITEMS} items")));
            }
            items.push(item);
            let t = self.peek(0).clone();
            match t.tok {
                Tok::Comma => self.bump(),
                Tok::Close => {
                    self.bump();
                    break t.end;
                }
                _ => return Err(self.unexpected(&t, "expected ',' or ')' in the IN list")),
            }
        };
        let Expr::Property(property) = left.expr else {
            return Err(self.error(
                left.start,
                format!("IN needs a property on its left, found {}", snippet(&self.text[left.start..left.end])),
            ));
        };
        Ok((Expr::In { property, items, negated }, end))
    }

    /// A string literal, or an error saying `expected`.
    fn expect_string(&mut self, expected: &str) -> Result<(String, usize), SqlError> {
        let t = self.peek(0).clone();
        match t.tok {
            Tok::Str(s) => {
                self.bump();
                Ok((s, t.end))
            }
            _ => Err(self.unexpected(&t, expected)),
        }
    }

    fn parse_unary(&mut self) -> Result<Node, SqlError> {
        let t = self.peek(0).clone();
        if !matches!(t.tok, Tok::Plus | Tok::Minus | Tok::Keyword(Keyword::Not)) {
            return self.parse_primary();
        }
        self.enter(t.start)?;
        self.bump();
        let inner = self.parse_unary()?;
        self.depth -= 1;
        let end = inner.end;
        let expr = match t.tok {
            // Unary plus changes nothing, not even what kind of piece it is.
            Tok::Plus => inner.expr,
            Tok::Minus => Expr::Negate(Box::new(inner.expr)),
            _ => Expr::Not(Box::new(self.condition(inner)?)),
        };
        Ok(Node { expr, start: t.start, end })
    }

    fn parse_primary(&mut self) -> Result<Node, SqlError> {
        let t = self.peek(0).clone();
        let expr = match &t.tok {
            Tok::Str(s) => Expr::Constant(Constant::Str(s.clone())),
            Tok::Integer => Expr::Constant(self.integer(&t)?),
            Tok::Float => Expr::Constant(self.float(&t)?),
            Tok::Keyword(Keyword::True) => Expr::Constant(Constant::Bool(true)),
            Tok::Keyword(Keyword::False) => Expr::Constant(Constant::Bool(false)),
            Tok::Keyword(Keyword::Null) => Expr::Constant(Constant::Null),
            Tok::Ident => Expr::Property(self.text[t.start..t.end].to_string()),
            Tok::Open => {
                self.enter(t.start)?;
                self.bump();
                let inner = self.parse_or()?;
                let close = self.peek(0).clone();
                if close.tok != Tok::Close {
                    let expected = format!("expected ')' to close the '(' at column {}", column(self.text, t.start));
                    return Err(self.unexpected(&close, &expected));
                }
                self.bump();
                self.depth -= 1;
                // Parentheses change nothing, not even what kind of piece it is.
                return Ok(Node { expr: inner.expr, start: t.start, end: close.end });
            }
            _ => {
                let expected = match self.pos.checked_sub(1).and_then(|p| self.toks.get(p)) {
                    Some(prev) => format!("expected a value after '{}'", snippet(&self.text[prev.start..prev.end])),
                    None => "expected a condition".to_string(),
                };
                return Err(self.unexpected(&t, &expected));
            }
        };
        self.bump();
        Ok(Node { expr, start: t.start, end: t.end })
    }

    /// An integer literal: 32-bit if it fits, else 64-bit, else refused.
    fn integer(&self, t: &Token) -> Result<Constant, SqlError> {
        let text = &self.text[t.start..t.end];
        let digits = text.strip_suffix(['l', 'L']).unwrap_or(text);
        let v: i64 = digits.parse().map_err(|_| {
            self.error(t.start, format!("integer {} is out of range; the largest is {}", snippet(text), i64::MAX))
        })?;
        Ok(i32::try_from(v).map_or(Constant::Long(v), Constant::Int))
    }

    /// A decimal literal: finite and above zero, as RocketMQ requires.
    fn float(&self, t: &Token) -> Result<Constant, SqlError> {
        let text = &self.text[t.start..t.end];
        let v: f64 =
            text.parse().map_err(|_| self.error(t.start, format!("cannot read the number {}", snippet(text))))?;
        if v.is_infinite() {
            return Err(self.error(t.start, format!("number {} is too large", snippet(text))));
        }
        if v == 0.0 {
            return Err(self.error(
                t.start,
                format!("decimal number {} is zero or rounds to zero, which RocketMQ refuses", snippet(text)),
            ));
        }
        Ok(Constant::Double(v))
    }

    /// An operand of `>`, `>=`, `<`, `<=` or `BETWEEN`: not a string, boolean or NULL
    /// literal, not a condition.
    fn check_ordered_operand(&self, n: &Node, symbol: &str) -> Result<(), SqlError> {
        match &n.expr {
            Expr::Constant(Constant::Int(_) | Constant::Long(_) | Constant::Double(_)) => Ok(()),
            Expr::Constant(_) => Err(self.error(
                n.start,
                format!("{} cannot be compared with {symbol}: only numbers and properties can", self.quote(n)),
            )),
            e if e.is_condition() => {
                Err(self
                    .error(n.start, format!("{} is a condition and cannot be compared with {symbol}", self.quote(n))))
            }
            _ => Ok(()),
        }
    }

    /// An operand of `=` or `<>`: not the NULL literal.
    fn check_equal_operand(&self, n: &Node) -> Result<(), SqlError> {
        match n.expr {
            Expr::Constant(Constant::Null) => {
                Err(self.error(n.start, "NULL cannot be compared with '=' or '<>'; use IS NULL or IS NOT NULL"))
            }
            _ => Ok(()),
        }
    }

    /// `TRUE = 5` and the like: a boolean literal on the left of `=` or `<>` with a literal
    /// of another type on the right.
    fn check_equal_compatible(&self, l: &Node, r: &Node) -> Result<(), SqlError> {
        match (&l.expr, &r.expr) {
            (Expr::Constant(Constant::Bool(_)), Expr::Constant(c))
                if !matches!(c, Constant::Bool(_) | Constant::Null) =>
            {
                Err(self.error(l.start, format!("{} cannot be compared with {}", self.quote(l), self.quote(r))))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::*;

    /// Whether `expr` matches a message with these properties.
    fn passes(expr: &str, props: &[(&str, &str)]) -> bool {
        let f = SqlFilter::parse(expr).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"));
        f.matches(|k| props.iter().find(|(n, _)| *n == k).map(|(_, v)| *v))
    }

    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

    fn check_table(cases: &[Case<'_>]) {
        let failures: Vec<String> = cases
            .iter()
            .filter(|(expr, props, want)| passes(expr, props) != *want)
            .map(|(expr, props, want)| format!("{expr:?} with {props:?}: expected {want}"))
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn comparisons_follow_rocketmq() {
        check_table(&[
            ("a = 'x'", &[("a", "x")], true),
            ("a = 'x'", &[("a", "y")], false),
            ("a <> 'x'", &[("a", "y")], true),
            ("a <> 'x'", &[("a", "x")], false),
            ("a = b", &[("a", "3.14"), ("b", "3.14")], true),
            ("a <> b", &[("a", "3.14"), ("b", "3.141")], true),
            // Texts compare exactly with '=', numbers read the text.
            ("a = '5.0'", &[("a", "5")], false),
            ("a = 5", &[("a", "5")], true),
            ("a = 5", &[("a", "+5")], true),
            ("a = 5", &[("a", "05")], true),
            ("a = 5.0", &[("a", "5")], true),
            ("5 = a", &[("a", "5")], true),
            // An integer literal reads the text as a 32-bit integer: failing stops everything.
            ("a = 5", &[("a", "5.0")], false),
            ("a <> 5", &[("a", "5.0")], false),
            ("a = 5 OR b = 'x'", &[("a", "5.0"), ("b", "x")], false),
            ("b = 'x' OR a = 5", &[("a", "5.0"), ("b", "x")], true),
            ("a > 5", &[("a", "6")], true),
            ("a > 5", &[("a", "5")], false),
            ("a > 5", &[("a", "abc")], false),
            ("NOT (a > 5)", &[("a", "abc")], false),
            ("a > 5", &[("a", "5000000000")], false),
            ("a > 5000000000", &[("a", "6000000000")], true),
            ("a > 2147483647", &[("a", "2147483648")], false),
            ("a > 2147483648", &[("a", "2147483649")], true),
            ("a >= 5", &[("a", "5")], true),
            ("a < -3", &[("a", "-4")], true),
            ("a <= -3", &[("a", "-3")], true),
            ("5 < a", &[("a", "6")], true),
            ("5 < a", &[("a", "6.5")], false),
            ("5.0 < a", &[("a", "6.5")], true),
            ("a > 3.14", &[("a", "3.1415")], true),
            ("a > 3.1E10", &[("a", "3.1415E10")], true),
            ("a > 1.5E3", &[("a", "1501")], true),
            ("a > .5", &[("a", "0.6")], true),
            ("a > 5.", &[("a", "6")], true),
            // Decimals are read as Java's Double.valueOf reads them.
            ("a > 5.5", &[("a", " 6")], true),
            ("a > 5", &[("a", " 6")], false),
            ("a > 1.5", &[("a", "2d")], true),
            ("a > 1.5", &[("a", "NaN")], true),
            ("a < 1.5", &[("a", "-Infinity")], true),
            ("a > 1.5", &[("a", "1e")], false),
            ("a > 1.5", &[("a", "0x10")], false),
            // Two properties are both read as decimals by >, < ...
            ("a > b", &[("a", "20"), ("b", "10")], true),
            ("a > b", &[("a", "10"), ("b", "20")], false),
            ("a > b", &[("a", "2.5"), ("b", "2")], true),
            ("a > b", &[("a", "x"), ("b", "1")], false),
            ("a >= b", &[("a", "-0"), ("b", "0")], false),
            // ... while '=' compares their texts.
            ("a = b", &[("a", "2.0"), ("b", "2")], false),
            ("a BETWEEN 2 AND 10", &[("a", "2")], true),
            ("a BETWEEN 2 AND 10", &[("a", "10")], true),
            ("a BETWEEN 2 AND 10", &[("a", "3")], true),
            ("a BETWEEN 2 AND 10", &[("a", "1")], false),
            ("a BETWEEN 2 AND 10", &[("a", "11")], false),
            ("a BETWEEN 2 AND 10", &[("a", "abc")], false),
            ("a NOT BETWEEN 2 AND 10", &[("a", "1")], true),
            ("a NOT BETWEEN 2 AND 10", &[("a", "11")], true),
            ("a NOT BETWEEN 2 AND 10", &[("a", "5")], false),
            ("a BETWEEN -5 AND 5", &[("a", "0")], true),
            ("a BETWEEN 5 AND -5", &[("a", "0")], false),
            ("a BETWEEN b AND c", &[("a", "2.5"), ("b", "1"), ("c", "3")], true),
            // BETWEEN stops at its first deciding side, like RocketMQ's AND / OR.
            ("a BETWEEN 1.5 AND 2", &[("a", "1")], false),
            ("a BETWEEN 1.5 AND 2", &[("a", "1.7")], false),
            ("a NOT BETWEEN 1.5 AND 2", &[("a", "1")], true),
            ("a NOT BETWEEN 1.5 AND 2", &[("a", "1.7")], false),
            ("a BETWEEN 1.5 AND 2.5", &[("a", "1.7")], true),
            ("a IN ('3', '4')", &[("a", "3")], true),
            ("a IN ('3', '4')", &[("a", "8")], false),
            ("a NOT IN ('3', '4')", &[("a", "8")], true),
            ("a NOT IN ('3', '4')", &[("a", "3")], false),
            ("a IN ('3')", &[("a", "3.0")], false),
            ("a IS NULL", &[("a", "")], false),
            ("a IS NOT NULL", &[("a", "")], true),
            // Booleans: a text is true when it says so in any case.
            ("a = TRUE", &[("a", "true")], true),
            ("a = TRUE", &[("a", "TRUE")], true),
            ("a = TRUE", &[("a", "yes")], false),
            ("a = FALSE", &[("a", "anything")], true),
            ("a=TRUE OR b=FALSE", &[("a", "true"), ("b", "false")], true),
            ("a=TRUE OR b=FALSE", &[("a", "false"), ("b", "true")], false),
            ("TRUE = a", &[("a", "true")], false),
            ("'true' = (a = 'x')", &[("a", "x")], true),
            ("(a = 'x') = 'true'", &[("a", "x")], false),
            ("(a = 'x') = (b = 'y')", &[("a", "x"), ("b", "y")], true),
            ("(a = 'x') = (b = 'y')", &[("a", "x"), ("b", "z")], false),
            ("5 = (a = 'x')", &[("a", "x")], false),
            ("a = 1 = TRUE", &[("a", "1")], true),
            // A property alone as a condition is false when present.
            ("a", &[("a", "true")], false),
            ("NOT a", &[("a", "x")], true),
            ("a AND b", &[("a", "true"), ("b", "true")], false),
            ("NOT a = 'x'", &[("a", "x")], false),
            ("NOT (a = 'x')", &[("a", "y")], true),
            // Unary minus on a text gives NULL.
            ("a = -b", &[("a", "1"), ("b", "-1")], false),
            ("a = -b", &[("b", "1")], true),
            ("TRUE", &[], true),
            ("FALSE", &[], false),
            ("NOT FALSE", &[], true),
            ("(TRUE)", &[], true),
        ]);
    }

    #[test]
    fn missing_properties_follow_rocketmq() {
        check_table(&[
            ("a = 'x'", &[], false),
            ("a <> 'x'", &[], false),
            ("NOT (a = 'x')", &[], false),
            ("NOT (a <> 'x')", &[], false),
            // '=' with NULL on the right only is false, so its '<>' is true.
            ("'x' = a", &[], false),
            ("'x' <> a", &[], true),
            ("5 <> a", &[], true),
            ("a = b", &[], true),
            ("a <> b", &[], false),
            ("a = b", &[("b", "x")], false),
            ("a <> b", &[("b", "x")], false),
            ("a = b", &[("a", "x")], false),
            ("a <> b", &[("a", "x")], true),
            ("a > 5", &[], false),
            ("NOT (a > 5)", &[], false),
            ("5 < a", &[], false),
            ("a > b", &[("a", "1")], false),
            ("a BETWEEN 2 AND 10", &[], false),
            ("a NOT BETWEEN 2 AND 10", &[], false),
            ("a IN ('3')", &[], false),
            ("a NOT IN ('3')", &[], false),
            ("a IS NULL", &[], true),
            ("a IS NOT NULL", &[], false),
            ("NOT a IS NULL", &[], true),
            ("a = TRUE", &[], false),
            ("a = FALSE", &[], false),
            ("a", &[], false),
            ("NOT a", &[], false),
            ("NULL", &[], false),
            ("NOT NULL", &[], false),
            ("a = 1 OR TRUE", &[], true),
            ("TRUE OR a = 1", &[], true),
            ("a = 1 AND FALSE", &[], false),
            ("NOT (a = 1 AND FALSE)", &[], true),
            ("NOT (a = 1 OR FALSE)", &[], false),
            ("NOT (a = 1 AND TRUE)", &[], false),
            ("a IS NULL OR a = 'hello'", &[], true),
            ("a IS NULL OR a = 'hello'", &[("a", "hello")], true),
            ("a IS NULL OR a = 'hello'", &[("a", "abc")], false),
            ("a IS NOT NULL AND a = 'hello'", &[("a", "hello")], true),
            ("a IS NOT NULL AND a = 'hello'", &[], false),
            // CONTAINS and friends are false (never unknown) on a missing value.
            ("a CONTAINS 'x'", &[], false),
            ("a NOT CONTAINS 'x'", &[], false),
            ("NOT (a CONTAINS 'x')", &[], true),
            ("a STARTSWITH 'x'", &[], false),
            ("a NOT ENDSWITH 'x'", &[], false),
        ]);
    }

    #[test]
    fn text_operators_follow_rocketmq() {
        check_table(&[
            ("value CONTAINS 'x'", &[("value", "axb")], true),
            ("value STARTSWITH 'ax'", &[("value", "axb")], true),
            ("value ENDSWITH 'xb'", &[("value", "axb")], true),
            ("value NOT CONTAINS 'x'", &[("value", "axb")], false),
            ("value NOT STARTSWITH 'ax'", &[("value", "axb")], false),
            ("value NOT ENDSWITH 'xb'", &[("value", "axb")], false),
            ("value CONTAINS 'x'", &[("value", "abb")], false),
            ("value NOT CONTAINS 'x'", &[("value", "abb")], true),
            ("value NOT STARTSWITH 'x'", &[("value", "abb")], true),
            ("value NOT ENDSWITH 'x'", &[("value", "abb")], true),
            ("value CONTAINS ''", &[("value", "axb")], false),
            ("value NOT CONTAINS ''", &[("value", "axb")], false),
            ("value STARTSWITH ''", &[("value", "axb")], false),
            ("value NOT ENDSWITH ''", &[("value", "axb")], false),
            ("'axb' CONTAINS 'x'", &[], true),
            ("'axb' NOT CONTAINS 'u'", &[], true),
            ("' ' STARTSWITH ' '", &[], true),
            ("'axb' CONTAINS '.'", &[], false),
            ("'s' CONTAINS '\\'", &[], false),
            ("value CONTAINS 'é'", &[("value", "café")], true),
            (
                "a NOT IN ('4', '4', '5') AND b BETWEEN 3 AND 10 AND c NOT CONTAINS 'axbc'",
                &[("a", "3"), ("b", "3"), ("c", "axbdc")],
                true,
            ),
            // The result of a text operator is a boolean, which contains nothing.
            ("a CONTAINS 'x' CONTAINS 'x'", &[("a", "x")], false),
            ("a CONTAINS 'x' = TRUE", &[("a", "x")], true),
        ]);
    }

    #[test]
    fn precedence_keywords_and_literals() {
        check_table(&[
            ("a = 1 OR b = 2 AND c = 3", &[("a", "1")], true),
            ("(a = 1 OR b = 2) AND c = 3", &[("a", "1")], false),
            ("a = 1 OR b = 2 AND c = 3", &[("b", "2")], false),
            ("a = 1 OR b = 2 AND c = 3", &[("b", "2"), ("c", "3")], true),
            ("a > 5 = TRUE", &[("a", "6")], true),
            ("a > 5 = FALSE", &[("a", "4")], true),
            ("a > 5 = FALSE", &[], false),
            ("a IN ('x') = FALSE", &[("a", "y")], true),
            ("a=3 and b<>4 And c>5 AND d<=4", &[("a", "3"), ("b", "5"), ("c", "6"), ("d", "1")], true),
            ("a=3 and b<>4 And c>5 AND d<=4", &[("a", "4"), ("b", "5"), ("c", "6"), ("d", "1")], false),
            ("a=3 or b<>4 Or c>5 OR d<=4", &[("a", "4"), ("b", "4"), ("c", "3"), ("d", "2")], true),
            ("a=3 or b<>4 Or c>5 OR d<=4", &[("a", "4"), ("b", "4"), ("c", "3"), ("d", "10")], false),
            ("a between 2 and 10", &[("a", "3")], true),
            ("a Is Not Null", &[("a", "3")], true),
            ("a iN ('x')", &[("a", "x")], true),
            ("a nOt iN ('x')", &[("a", "y")], true),
            ("a contains 'x' or a startsWith 'y' or a ENDSWITH 'z'", &[("a", "_z")], true),
            ("a = true", &[("a", "True")], true),
            ("not a is null", &[("a", "x")], false),
            ("A = 'x'", &[("a", "x")], false),
            ("$a_1 = 'x'", &[("$a_1", "x")], true),
            ("now = 'x'", &[("now", "x")], true),
            ("TAGS is not null and TAGS='''''tag'''''", &[("TAGS", "''tag''")], true),
            ("a = 'it''s'", &[("a", "it's")], true),
            ("a IN ('it''s', 'b')", &[("a", "it's")], true),
            ("a = 10L", &[("a", "10")], true),
            ("a = 10l", &[("a", "10")], true),
            ("a = -5", &[("a", "-5")], true),
            ("a = - -5", &[("a", "5")], true),
            ("a = +5", &[("a", "5")], true),
            ("a = -2147483648", &[("a", "-2147483648")], true),
            ("a > -2147483648", &[("a", "-2147483647")], true),
            ("a = 2147483647", &[("a", "2147483647")], true),
            ("a = 2147483647", &[("a", "2147483648")], false),
            ("a < 9223372036854775807", &[("a", "9223372036854775806")], true),
            ("a = -2.5", &[("a", "-2.5")], true),
            ("a = 1e3", &[("a", "1000")], true),
            ("a = 1E+3", &[("a", "1000.0")], true),
            ("a = 1 -- a comment\n AND b = 2", &[("a", "1"), ("b", "2")], true),
            ("a = 1 -- a comment at the end", &[("a", "1")], true),
            ("a = 1 /* a comment */ AND b = 2", &[("a", "1"), ("b", "2")], true),
            ("a = 1 /* a comment */ AND b = 2", &[("a", "1"), ("b", "3")], false),
            ("\ta\n=\r'x'\x0c", &[("a", "x")], true),
        ]);
    }

    #[test]
    fn bad_expressions_name_the_column() {
        let cases: &[(&str, usize, &str)] = &[
            ("a >", 4, "expected a value after '>', found the end of the expression"),
            ("a > AND b = 1", 5, "expected a value after '>', found 'AND'"),
            ("a = 1 AND", 10, "expected a value after 'AND'"),
            (")", 1, "expected a condition, found ')'"),
            ("a = NULL", 5, "NULL cannot be compared"),
            ("NULL = a", 1, "NULL cannot be compared"),
            ("a <> NULL", 6, "use IS NULL"),
            ("TRUE = 5", 1, "'TRUE' cannot be compared with '5'"),
            ("a > 'x'", 5, "the string 'x' cannot be compared with >"),
            ("a > TRUE", 5, "cannot be compared with >"),
            ("a >= NULL", 6, "cannot be compared with >="),
            ("a > (b = 1)", 5, "'(b = 1)' is a condition"),
            ("a > 5 > 3", 1, "'a > 5' is a condition"),
            ("NOT a > 5", 1, "is a condition"),
            ("a BETWEEN 10 AND 0", 11, "lower bound '10' is above its upper bound '0'"),
            ("a BETWEEN NULL AND 5", 11, "cannot be NULL"),
            ("a BETWEEN 'x' AND 5", 11, "cannot be compared"),
            ("a BETWEEN 'a' AND 'b'", 11, "the string 'a' cannot be compared with BETWEEN"),
            ("a BETWEEN 1 5", 13, "expected AND between the bounds of BETWEEN, found '5'"),
            ("5", 1, "'5' is not a condition"),
            ("'x'", 1, "is not a condition"),
            ("-a", 1, "is not a condition"),
            ("a = 1 AND 5", 11, "'5' is not a condition"),
            ("5 OR a = 1", 1, "'5' is not a condition"),
            ("NOT 5", 5, "'5' is not a condition"),
            ("a = 1 b = 2", 7, "unexpected 'b' after a complete condition"),
            ("a = 1)", 6, "unexpected ')' after a complete condition"),
            ("a = 1 -- x\n b", 13, "unexpected 'b'"),
            ("(a = 1", 7, "expected ')' to close the '(' at column 1"),
            ("a IN ()", 7, "expected a string in the IN list, found ')'"),
            ("a IN ('x' 'y')", 11, "expected ',' or ')' in the IN list, found the string 'y'"),
            ("a IN (1)", 7, "expected a string in the IN list, found '1'"),
            ("a IN 'x'", 6, "expected '(' after IN"),
            ("5 IN ('x')", 1, "IN needs a property on its left"),
            ("a NOT 5", 7, "expected BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH after NOT"),
            ("a NOT = 5", 7, "after NOT"),
            ("a IS 5", 6, "expected NULL or NOT NULL after IS"),
            ("a IS NOT 5", 10, "expected NULL after IS NOT"),
            ("a CONTAINS x", 12, "expected a string after CONTAINS"),
            ("a NOT STARTSWITH 123", 18, "expected a string after STARTSWITH"),
            ("a CONTAINS", 11, "found the end of the expression"),
            ("a = 'x", 5, "unterminated string"),
            ("a = 1 /* x", 7, "unterminated comment"),
            ("a # 1", 3, "unexpected character '#'"),
            ("a != 1", 3, "unexpected character '!'"),
            ("a.b = 1", 2, "unexpected character '.'"),
            ("a = \"x\"", 5, "unexpected character '\"'"),
            ("é = 1", 1, "unexpected character 'é'"),
            ("'é' = a AND #", 13, "unexpected character '#'"),
            ("a > 100000000000000000000000", 5, "out of range"),
            ("a > 9223372036854775808", 5, "out of range"),
            ("a > 0.0", 5, "zero"),
            ("a > 0.", 5, "zero"),
            ("a > 1e-400", 5, "zero"),
            ("a > 1e400", 5, "too large"),
            ("a = 007", 6, "unexpected '0'"),
            ("a = 5e", 6, "unexpected 'e'"),
        ];
        for &(expr, col, fragment) in cases {
            let err = SqlFilter::parse(expr).expect_err(expr);
            assert_eq!(err.column(), Some(col), "{expr:?}: {err}");
            let text = err.to_string();
            assert!(text.starts_with(&format!("at column {col}: ")), "{expr:?}: {text}");
            assert!(text.contains(fragment), "{expr:?}: {text:?} should contain {fragment:?}");
        }
    }

    #[test]
    fn empty_expressions_are_refused() {
        for expr in ["", "   ", "\n\t", "-- only a comment\n", "/* nothing */", "-- nothing at all"] {
            assert_eq!(SqlFilter::parse(expr), Err(SqlError::Empty), "{expr:?}");
        }
        assert_eq!(SqlError::Empty.to_string(), "empty SQL expression");
    }

    #[test]
    fn limits_give_errors_not_crashes() {
        // Length.
        let long = format!("a = '{}'", "x".repeat(MAX_SQL_LEN - 6));
        assert_eq!(long.len(), MAX_SQL_LEN);
        assert!(SqlFilter::parse(&long).is_ok());
        let longer = format!("a = '{}'", "x".repeat(MAX_SQL_LEN - 5));
        assert_eq!(SqlFilter::parse(&longer), Err(SqlError::TooLong(MAX_SQL_LEN + 1)));
        assert!(matches!(SqlFilter::parse(&"(".repeat(10_000)), Err(SqlError::TooLong(10_000))));

        // Nesting: parentheses, NOT chains, minus chains, comparison chains.
        let ok = format!("{}a = 1{}", "(".repeat(MAX_SQL_DEPTH), ")".repeat(MAX_SQL_DEPTH));
        assert!(passes(&ok, &[("a", "1")]));
        let too_deep = format!("{}a = 1{}", "(".repeat(MAX_SQL_DEPTH + 1), ")".repeat(MAX_SQL_DEPTH + 1));
        let err = SqlFilter::parse(&too_deep).expect_err("too deep");
        assert_eq!(err.column(), Some(MAX_SQL_DEPTH + 1));
        assert!(err.to_string().contains("nests deeper than 64 levels"), "{err}");
        let err = SqlFilter::parse(&"(".repeat(4000)).expect_err("too deep");
        assert_eq!(err.column(), Some(MAX_SQL_DEPTH + 1));
        let err = SqlFilter::parse(&format!("{}a", "NOT ".repeat(1000))).expect_err("too deep");
        assert_eq!(err.column(), Some(4 * MAX_SQL_DEPTH + 1));
        assert!(!passes(&format!("{}a", "NOT ".repeat(MAX_SQL_DEPTH)), &[]));
        let err = SqlFilter::parse(&format!("a = {}1", "- ".repeat(2000))).expect_err("too deep");
        assert!(err.to_string().contains("nests deeper"), "{err}");
        let err = SqlFilter::parse(&format!("a{}", " IS NULL".repeat(400))).expect_err("too deep");
        assert!(err.to_string().contains("nests deeper"), "{err}");
        // Long AND / OR chains are flat: no nesting limit, as long as the text fits.
        let chain = vec!["a = 1"; 400].join(" AND ");
        assert!(passes(&chain, &[("a", "1")]));
        assert!(!passes(&chain, &[("a", "2")]));
        let chain = vec!["a = 1"; 400].join(" OR ");
        assert!(passes(&chain, &[("a", "1")]));

        // IN lists.
        let items = |n: usize| (0..n).map(|i| format!("'{i}'")).collect::<Vec<_>>().join(",");
        let ok = format!("a IN ({})", items(MAX_IN_ITEMS));
        assert!(passes(&ok, &[("a", "255")]));
        let err = SqlFilter::parse(&format!("a IN ({})", items(MAX_IN_ITEMS + 1))).expect_err("long IN list");
        assert!(err.to_string().contains("more than 256 items"), "{err}");

        // Property names.
        let name = "p".repeat(MAX_PROPERTY_NAME_LEN);
        assert!(passes(&format!("{name} = 'x'"), &[(name.as_str(), "x")]));
        let err = SqlFilter::parse(&format!("a = 1 OR {name}p IS NULL")).expect_err("long name");
        assert_eq!(err.column(), Some(10));
        assert!(err.to_string().contains("256 bytes long, the limit is 255"), "{err}");
    }

    #[test]
    fn text_is_kept_and_filters_compare() {
        let f = SqlFilter::parse("a > 5 AND b = 'x'").expect("valid");
        assert_eq!(f.text(), "a > 5 AND b = 'x'");
        assert_eq!(f, f.clone());
        assert_ne!(f, SqlFilter::parse("a > 5 OR b = 'x'").expect("valid"));
        // The lookup may borrow from a map that lives shorter than 'static.
        let props =
            std::collections::HashMap::from([("a".to_string(), "6".to_string()), ("b".to_string(), "x".to_string())]);
        assert!(f.matches(|k| props.get(k).map(String::as_str)));
    }

    #[test]
    fn java_number_reading() {
        assert_eq!(java_double("  7\n").ok(), Some(7.0));
        assert_eq!(java_double("-Infinity").ok(), Some(f64::NEG_INFINITY));
        assert!(java_double("NaN").is_ok_and(f64::is_nan));
        assert!(java_double("-0").is_ok_and(|d| d == 0.0 && d.is_sign_negative()));
        assert_eq!(java_double("1.5e2f").ok(), Some(150.0));
        assert_eq!(java_double(".5").ok(), Some(0.5));
        assert_eq!(java_double("5.").ok(), Some(5.0));
        assert_eq!(java_double("1e99999999999999999999").ok(), Some(f64::INFINITY));
        for bad in ["", ".", "e5", "1e", "1e+", "inf", "infinity", "nan", "NaNd", "1.5ff", "1 5", "- 5", "1_0", "0x1p3"]
        {
            assert!(java_double(bad).is_err(), "{bad:?}");
        }
        assert_eq!(java_double_cmp(-0.0, 0.0), Ordering::Less);
        assert_eq!(java_double_cmp(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(java_double_cmp(f64::NAN, -f64::NAN), Ordering::Equal);
        assert_eq!(java_double_cmp(1.0, 2.0), Ordering::Less);
        assert!(java_int("+5").is_ok_and(|i| i == 5));
        assert!(java_int("2147483648").is_err());
        assert!(java_int(" 5").is_err());
        assert!(java_long("2147483648").is_ok_and(|l| l == 2_147_483_648));
    }

    // --- Property test: the evaluator against a reference over a small typed AST. ---

    const NAMES: [&str; 4] = ["a", "b", "c", "TAGS"];

    /// Property values, each with how Java reads it: `Integer.valueOf`, `Long.valueOf`,
    /// `Double.valueOf` (`None`: throws).
    #[allow(clippy::type_complexity)]
    const VALUES: &[(&str, Option<i32>, Option<i64>, Option<f64>)] = &[
        ("5", Some(5), Some(5), Some(5.0)),
        ("-3", Some(-3), Some(-3), Some(-3.0)),
        ("+4", Some(4), Some(4), Some(4.0)),
        ("007", Some(7), Some(7), Some(7.0)),
        ("0", Some(0), Some(0), Some(0.0)),
        ("-0", Some(0), Some(0), Some(-0.0)),
        ("2.5", None, None, Some(2.5)),
        (" 7", None, None, Some(7.0)),
        ("1e3", None, None, Some(1000.0)),
        ("3d", None, None, Some(3.0)),
        ("-2.5f", None, None, Some(-2.5)),
        ("NaN", None, None, Some(f64::NAN)),
        ("-Infinity", None, None, Some(f64::NEG_INFINITY)),
        ("2147483647", Some(i32::MAX), Some(2_147_483_647), Some(2_147_483_647.0)),
        ("-2147483648", Some(i32::MIN), Some(-2_147_483_648), Some(-2_147_483_648.0)),
        ("2147483648", None, Some(2_147_483_648), Some(2_147_483_648.0)),
        ("5000000000", None, Some(5_000_000_000), Some(5e9)),
        ("9223372036854775807", None, Some(i64::MAX), Some(9.223_372_036_854_776e18)),
        ("9223372036854775808", None, None, Some(9.223_372_036_854_776e18)),
        ("abc", None, None, None),
        ("", None, None, None),
        ("true", None, None, None),
        ("TRUE", None, None, None),
        ("it's", None, None, None),
        ("x", None, None, None),
        ("axb", None, None, None),
    ];

    #[derive(Debug, Clone, Copy)]
    enum Num {
        Int(i32),
        Long(i64),
        Double(f64),
    }

    impl Num {
        fn sql(self) -> String {
            match self {
                Num::Int(i) if i < 0 => format!("-{}", i.unsigned_abs()),
                Num::Int(i) => i.to_string(),
                Num::Long(l) if l < 0 => format!("-{}", l.unsigned_abs()),
                Num::Long(l) => l.to_string(),
                Num::Double(d) if d.is_sign_negative() => format!("-{:?}", -d),
                Num::Double(d) => format!("{d:?}"),
            }
        }

        fn approx(self) -> f64 {
            match self {
                Num::Int(i) => f64::from(i),
                Num::Long(l) => l as f64,
                Num::Double(d) => d,
            }
        }

        /// A property value read as a number of this one's type, as Java reads it.
        fn read(self, v: &str) -> Result<Num, ()> {
            let row = VALUES.iter().find(|r| r.0 == v).expect("values come from VALUES");
            match self {
                Num::Int(_) => row.1.map(Num::Int),
                Num::Long(_) => row.2.map(Num::Long),
                Num::Double(_) => row.3.map(Num::Double),
            }
            .ok_or(())
        }

        /// Java's compareTo on two numbers of the same type.
        fn java_cmp(self, other: Num) -> Ordering {
            let canonical = |d: f64| if d.is_nan() { f64::NAN } else { d };
            match (self, other) {
                (Num::Int(a), Num::Int(b)) => a.cmp(&b),
                (Num::Long(a), Num::Long(b)) => a.cmp(&b),
                (Num::Double(a), Num::Double(b)) => canonical(a).total_cmp(&canonical(b)),
                _ => unreachable!("compared numbers have the same type"),
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Eq,
        Ne,
        Gt,
        Ge,
        Lt,
        Le,
    }

    impl Op {
        fn sql(self) -> &'static str {
            match self {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Gt => ">",
                Op::Ge => ">=",
                Op::Lt => "<",
                Op::Le => "<=",
            }
        }

        fn holds(self, ord: Ordering) -> bool {
            match self {
                Op::Eq => ord.is_eq(),
                Op::Ne => ord.is_ne(),
                Op::Gt => ord.is_gt(),
                Op::Ge => ord.is_ge(),
                Op::Lt => ord.is_lt(),
                Op::Le => ord.is_le(),
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Contains,
        Starts,
        Ends,
    }

    /// A condition of the test language: each leaf is one comparison shape.
    #[derive(Debug, Clone)]
    enum Cond {
        /// TRUE, FALSE, NULL.
        Lit(Option<bool>),
        /// A property used as a condition.
        Prop(usize),
        PropNum(usize, Op, Num),
        NumProp(Num, Op, usize),
        /// `p = 's'` (true) or `p <> 's'` (false).
        PropStr(usize, bool, String),
        StrProp(String, bool, usize),
        PropProp(usize, Op, usize),
        /// `p = TRUE` and the like.
        PropBool(usize, bool, bool),
        Between(usize, Num, Num, bool),
        In(usize, Vec<String>, bool),
        IsNull(usize, bool),
        Text(usize, Kind, String, bool),
        Not(Box<Cond>),
        And(Box<Cond>, Box<Cond>),
        Or(Box<Cond>, Box<Cond>),
    }

    fn quoted(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    /// How tightly a printed condition binds: OR 1, AND 2, comparisons 3, unary and atoms 4.
    fn binding(c: &Cond) -> u8 {
        match c {
            Cond::Or(..) => 1,
            Cond::And(..) => 2,
            Cond::Lit(_) | Cond::Prop(_) | Cond::Not(_) => 4,
            _ => 3,
        }
    }

    /// The condition as SQL text, with only the parentheses precedence needs; keywords in
    /// upper case, lower case or capitalized (`case` 0, 1, 2).
    fn print(c: &Cond, case: u8) -> String {
        let kw = |w: &str| match case {
            0 => w.to_string(),
            1 => w.to_lowercase(),
            _ => format!("{}{}", &w[..1], w[1..].to_lowercase()),
        };
        let wrap = |c: &Cond, min: u8| {
            let s = print(c, case);
            if binding(c) < min { format!("({s})") } else { s }
        };
        let not = |negated: bool| if negated { format!("{} ", kw("NOT")) } else { String::new() };
        let eq = |is: bool| if is { "=" } else { "<>" };
        match c {
            Cond::Lit(Some(true)) => kw("TRUE"),
            Cond::Lit(Some(false)) => kw("FALSE"),
            Cond::Lit(None) => kw("NULL"),
            Cond::Prop(p) => NAMES[*p].to_string(),
            Cond::PropNum(p, op, n) => format!("{} {} {}", NAMES[*p], op.sql(), n.sql()),
            Cond::NumProp(n, op, p) => format!("{} {} {}", n.sql(), op.sql(), NAMES[*p]),
            Cond::PropStr(p, is, s) => format!("{} {} {}", NAMES[*p], eq(*is), quoted(s)),
            Cond::StrProp(s, is, p) => format!("{} {} {}", quoted(s), eq(*is), NAMES[*p]),
            Cond::PropProp(p, op, q) => format!("{} {} {}", NAMES[*p], op.sql(), NAMES[*q]),
            Cond::PropBool(p, is, b) => format!("{} {} {}", NAMES[*p], eq(*is), kw(if *b { "TRUE" } else { "FALSE" })),
            Cond::Between(p, lo, hi, negated) => {
                format!("{} {}{} {} {} {}", NAMES[*p], not(*negated), kw("BETWEEN"), lo.sql(), kw("AND"), hi.sql())
            }
            Cond::In(p, items, negated) => {
                let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
                format!("{} {}{} ({})", NAMES[*p], not(*negated), kw("IN"), items.join(", "))
            }
            Cond::IsNull(p, negated) => format!("{} {} {}{}", NAMES[*p], kw("IS"), not(*negated), kw("NULL")),
            Cond::Text(p, kind, s, negated) => {
                let op = match kind {
                    Kind::Contains => "CONTAINS",
                    Kind::Starts => "STARTSWITH",
                    Kind::Ends => "ENDSWITH",
                };
                format!("{} {}{} {}", NAMES[*p], not(*negated), kw(op), quoted(s))
            }
            Cond::Not(a) => format!("{} {}", kw("NOT"), wrap(a, 4)),
            Cond::And(a, b) => format!("{} {} {}", wrap(a, 2), kw("AND"), wrap(b, 3)),
            Cond::Or(a, b) => format!("{} {} {}", wrap(a, 1), kw("OR"), wrap(b, 2)),
        }
    }

    /// Unknown is `None`; `Err` is RocketMQ throwing (no match).
    type Truth = Result<Option<bool>, ()>;

    /// RocketMQ's AND (`decisive` false) or OR (`decisive` true) of two conditions, the
    /// second evaluated only when the first does not decide.
    fn logic(decisive: bool, l: Truth, r: impl FnOnce() -> Truth) -> Truth {
        let l = l?;
        if l == Some(decisive) {
            return Ok(l);
        }
        let r = r()?;
        if r == Some(decisive) {
            return Ok(r);
        }
        Ok(if l.is_some() && r.is_some() { Some(!decisive) } else { None })
    }

    /// `p op n` where `op` orders.
    fn ordered(v: Option<&str>, op: Op, n: Num) -> Truth {
        match v {
            None => Ok(None),
            Some(s) => Ok(Some(op.holds(n.read(s)?.java_cmp(n)))),
        }
    }

    /// What RocketMQ makes of a condition, written directly from its rules.
    fn reference(c: &Cond, get: &dyn Fn(&str) -> Option<&'static str>) -> Truth {
        let value = |p: usize| get(NAMES[p]);
        let negate_if = |t: Option<bool>, negated: bool| t.map(|b| b != negated);
        match c {
            Cond::Lit(b) => Ok(*b),
            Cond::Prop(p) => Ok(value(*p).map(|_| false)),
            Cond::PropNum(p, op, n) => match op {
                Op::Eq | Op::Ne => {
                    let eq = match value(*p) {
                        None => None,
                        Some(s) => Some(n.read(s)?.java_cmp(*n).is_eq()),
                    };
                    Ok(negate_if(eq, matches!(op, Op::Ne)))
                }
                _ => ordered(value(*p), *op, *n),
            },
            Cond::NumProp(n, op, p) => match op {
                Op::Eq | Op::Ne => {
                    // A value on the left, NULL on the right: false.
                    let eq = match value(*p) {
                        None => false,
                        Some(s) => n.java_cmp(n.read(s)?).is_eq(),
                    };
                    Ok(Some(eq != matches!(op, Op::Ne)))
                }
                _ => match value(*p) {
                    None => Ok(None),
                    Some(s) => Ok(Some(op.holds(n.java_cmp(n.read(s)?)))),
                },
            },
            Cond::PropStr(p, is, s) => Ok(negate_if(value(*p).map(|v| v == s), !is)),
            Cond::StrProp(s, is, p) => Ok(Some(value(*p).is_some_and(|v| v == s) == *is)),
            Cond::PropProp(p, op, q) => match op {
                Op::Eq | Op::Ne => {
                    let eq = match (value(*p), value(*q)) {
                        (None, None) => Some(true),
                        (None, Some(_)) => None,
                        (Some(_), None) => Some(false),
                        (Some(a), Some(b)) => Some(a == b),
                    };
                    Ok(negate_if(eq, matches!(op, Op::Ne)))
                }
                _ => match (value(*p), value(*q)) {
                    (Some(a), Some(b)) => {
                        let x = Num::Double(0.5).read(a)?;
                        let y = Num::Double(0.5).read(b)?;
                        Ok(Some(op.holds(x.java_cmp(y))))
                    }
                    _ => Ok(None),
                },
            },
            Cond::PropBool(p, is, b) => Ok(negate_if(value(*p).map(|v| (v.to_lowercase() == "true") == *b), !is)),
            Cond::Between(p, lo, hi, false) => {
                logic(false, ordered(value(*p), Op::Ge, *lo), || ordered(value(*p), Op::Le, *hi))
            }
            Cond::Between(p, lo, hi, true) => {
                logic(true, ordered(value(*p), Op::Lt, *lo), || ordered(value(*p), Op::Gt, *hi))
            }
            Cond::In(p, items, negated) => Ok(negate_if(value(*p).map(|v| items.iter().any(|i| i == v)), *negated)),
            Cond::IsNull(p, negated) => Ok(Some(value(*p).is_none() != *negated)),
            Cond::Text(p, kind, s, negated) => Ok(Some(match value(*p) {
                Some(v) if !s.is_empty() => {
                    let found = match kind {
                        Kind::Contains => v.contains(s.as_str()),
                        Kind::Starts => v.starts_with(s.as_str()),
                        Kind::Ends => v.ends_with(s.as_str()),
                    };
                    found != *negated
                }
                _ => false,
            })),
            Cond::Not(a) => Ok(reference(a, get)?.map(|b| !b)),
            Cond::And(a, b) => logic(false, reference(a, get), || reference(b, get)),
            Cond::Or(a, b) => logic(true, reference(a, get), || reference(b, get)),
        }
    }

    fn num() -> impl Strategy<Value = Num> {
        prop_oneof![
            (-12i32..12).prop_map(Num::Int),
            prop::sample::select(vec![i32::MAX, -i32::MAX, 7]).prop_map(Num::Int),
            prop::sample::select(vec![2_147_483_648i64, -2_147_483_648, 5_000_000_000, -5_000_000_000, i64::MAX])
                .prop_map(Num::Long),
            prop::sample::select(vec![0.5, 2.5, -2.5, 3.0, -7.0, 1000.0, 5e9, 1e20, 1e-7]).prop_map(Num::Double),
        ]
    }

    fn word() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["5", "abc", "", "true", "it's", "x", "2.5", "ax", "TRUE", "7"]).prop_map(String::from)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop::sample::select(vec![Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le])
    }

    fn name() -> impl Strategy<Value = usize> {
        0..NAMES.len()
    }

    fn leaf() -> impl Strategy<Value = Cond> {
        let comparisons = prop_oneof![
            (name(), op(), num()).prop_map(|(p, o, n)| Cond::PropNum(p, o, n)),
            (num(), op(), name()).prop_map(|(n, o, p)| Cond::NumProp(n, o, p)),
            (name(), any::<bool>(), word()).prop_map(|(p, is, s)| Cond::PropStr(p, is, s)),
            (word(), any::<bool>(), name()).prop_map(|(s, is, p)| Cond::StrProp(s, is, p)),
            (name(), op(), name()).prop_map(|(p, o, q)| Cond::PropProp(p, o, q)),
            (name(), any::<bool>(), any::<bool>()).prop_map(|(p, is, b)| Cond::PropBool(p, is, b)),
        ];
        let others = prop_oneof![
            prop::sample::select(vec![Some(true), Some(false), None]).prop_map(Cond::Lit),
            name().prop_map(Cond::Prop),
            (name(), num(), num(), any::<bool>()).prop_map(|(p, a, b, negated)| {
                // Two literal bounds must be in order (negative ones are not literals, but
                // ordering them too is harmless).
                let (lo, hi) = if a.approx() <= b.approx() { (a, b) } else { (b, a) };
                Cond::Between(p, lo, hi, negated)
            }),
            (name(), prop::collection::vec(word(), 1..4), any::<bool>()).prop_map(|(p, w, n)| Cond::In(p, w, n)),
            (name(), any::<bool>()).prop_map(|(p, n)| Cond::IsNull(p, n)),
            (name(), prop::sample::select(vec![Kind::Contains, Kind::Starts, Kind::Ends]), word(), any::<bool>())
                .prop_map(|(p, k, s, n)| Cond::Text(p, k, s, n)),
        ];
        prop_oneof![3 => comparisons, 2 => others]
    }

    fn cond() -> impl Strategy<Value = Cond> {
        leaf().prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    /// Which property has which value (an index into [`VALUES`]), if any.
    fn message() -> impl Strategy<Value = Vec<Option<usize>>> {
        prop::collection::vec(prop::option::weighted(0.75, 0..VALUES.len()), NAMES.len())
    }

    /// A mix of tokens and junk, for texts that are mostly invalid.
    fn token_soup() -> impl Strategy<Value = String> {
        let tokens = vec![
            "a",
            "b",
            "(",
            ")",
            "NOT",
            "AND",
            "OR",
            "=",
            "<>",
            ">",
            ">=",
            "<",
            "<=",
            "IS",
            "NULL",
            "IN",
            "BETWEEN",
            "CONTAINS",
            "'x'",
            "5",
            "2.5",
            "-",
            "+",
            ",",
            "TRUE",
            "FALSE",
            "0.0",
            "99999999999999999999",
            "--",
            "/*",
            "*/",
            "'",
            "#",
            "é",
            "\n",
        ];
        prop::collection::vec(prop::sample::select(tokens), 0..40).prop_map(|v| v.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Printing a generated condition, parsing it and evaluating it gives what the
        /// reference says RocketMQ gives.
        #[test]
        fn evaluator_agrees_with_reference(c in cond(), values in message(), case in 0u8..3) {
            let text = print(&c, case);
            let filter = SqlFilter::parse(&text);
            prop_assert!(filter.is_ok(), "{:?} does not parse: {:?}", text, filter);
            let get = |k: &str| -> Option<&'static str> {
                NAMES.iter().position(|n| *n == k).and_then(|i| values[i]).map(|v| VALUES[v].0)
            };
            let want = reference(&c, &get) == Ok(Some(true));
            let got = filter.map(|f| f.matches(get)).unwrap_or(!want);
            prop_assert_eq!(got, want, "{}", text);
        }

        /// Every generated condition prints to a text that parses back, and keeps the text.
        #[test]
        fn printed_conditions_parse(c in cond(), case in 0u8..3) {
            let text = print(&c, case);
            match SqlFilter::parse(&text) {
                Ok(f) => prop_assert_eq!(f.text(), text.as_str()),
                Err(e) => prop_assert!(false, "{:?} does not parse: {}", text, e),
            }
        }

        /// Arbitrary text never panics: it is refused, or it evaluates.
        #[test]
        fn arbitrary_text_never_panics(soup in token_soup(), raw in "\\PC{0,60}") {
            for text in [soup, raw] {
                match SqlFilter::parse(&text) {
                    Ok(f) => {
                        let _ = f.matches(|k| if k == "a" { Some("5") } else { None });
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
        }
    }
}
