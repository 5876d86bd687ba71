//! The filter against tables of RocketMQ's behaviour and a reference evaluator.

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
    for bad in ["", ".", "e5", "1e", "1e+", "inf", "infinity", "nan", "NaNd", "1.5ff", "1 5", "- 5", "1_0", "0x1p3"] {
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
