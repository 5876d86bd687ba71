//! The compiled form of a SQL92 filter: each node evaluates as the RocketMQ expression it
//! stands for.

use super::*;

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Constant {
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
    pub(super) fn value(&self) -> Option<Value<'_>> {
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
pub(super) enum Relation {
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
}

impl Relation {
    pub(super) fn holds(self, ord: Ordering) -> bool {
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
pub(super) enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

impl TextOp {
    pub(super) fn holds(self, text: &str, search: &str) -> bool {
        match self {
            TextOp::Contains => text.contains(search),
            TextOp::StartsWith => text.starts_with(search),
            TextOp::EndsWith => text.ends_with(search),
        }
    }
}

/// The compiled expression. Each node evaluates as the RocketMQ expression it stands for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
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
    pub(super) fn is_condition(&self) -> bool {
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
