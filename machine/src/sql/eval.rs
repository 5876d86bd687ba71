//! Evaluating a compiled filter over a message's properties with RocketMQ's three-valued
//! logic and its Java conversions between texts, numbers and booleans.

use super::*;

/// A value during evaluation (NULL is `None` around it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Value<'v> {
    Str(&'v str),
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
}

/// RocketMQ threw an exception while evaluating: the message does not match.
#[derive(Debug)]
pub(super) struct Abort;

pub(super) type Eval<'v> = Result<Option<Value<'v>>, Abort>;

pub(super) fn eval<'v, 'e: 'v, 'p: 'v>(e: &'e Expr, get: &dyn Fn(&str) -> Option<&'p str>) -> Eval<'v> {
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
pub(super) fn truth(v: Option<Value<'_>>) -> Result<Option<bool>, Abort> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(Abort),
    }
}

/// An `AND` chain (`decisive` false) or an `OR` chain (`decisive` true): the first operand
/// equal to `decisive` decides; otherwise unknown if any operand was.
pub(super) fn logic<'v, 'e: 'v, 'p: 'v>(
    items: &'e [Expr],
    decisive: bool,
    get: &dyn Fn(&str) -> Option<&'p str>,
) -> Eval<'v> {
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
pub(super) fn bound<'v, 'e: 'v, 'p: 'v>(
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
pub(super) fn relation(rel: Relation, l: Value<'_>, r: Value<'_>) -> Result<bool, Abort> {
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
pub(super) fn compare(l: Value<'_>, r: Value<'_>) -> Result<Ordering, Abort> {
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
pub(super) fn java_double_cmp(a: f64, b: f64) -> Ordering {
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
pub(super) fn java_int(s: &str) -> Result<i32, Abort> {
    s.parse().map_err(|_| Abort)
}

/// Java's `Long.valueOf(String)` (ASCII digits only).
pub(super) fn java_long(s: &str) -> Result<i64, Abort> {
    s.parse().map_err(|_| Abort)
}

/// Java's `Boolean.valueOf(String)`: true for `true` in any case, false for anything else.
pub(super) fn java_bool(s: &str) -> bool {
    s.eq_ignore_ascii_case("true")
}

/// Java's `Double.valueOf(String)`, hexadecimal forms excepted: surrounding control
/// characters and spaces are ignored, then an optional sign and `NaN`, `Infinity`, or
/// digits with an optional point and exponent, and an optional `f`/`F`/`d`/`D` at the end.
pub(super) fn java_double(s: &str) -> Result<f64, Abort> {
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
