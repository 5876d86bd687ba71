//! Recursive descent over RocketMQ's filter grammar into the compiled form.

use super::*;

/// A parsed piece of the expression and the byte span of its text.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) expr: Expr,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// Recursive descent over RocketMQ's grammar, applying the checks RocketMQ makes while it
/// builds its expression objects. `depth` bounds the nesting, hence the recursion.
#[derive(Debug)]
pub(super) struct Parser<'t> {
    pub(super) text: &'t str,
    pub(super) toks: Vec<Token>,
    pub(super) pos: usize,
    pub(super) depth: usize,
}

impl Parser<'_> {
    /// The token `k` places ahead (the end token when past it).
    pub(super) fn peek(&self, k: usize) -> &Token {
        let last = self.toks.len().saturating_sub(1);
        &self.toks[(self.pos + k).min(last)]
    }

    pub(super) fn bump(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    pub(super) fn at_keyword(&self, k: Keyword) -> bool {
        self.peek(0).tok == Tok::Keyword(k)
    }

    pub(super) fn error(&self, at: usize, message: impl Into<String>) -> SqlError {
        invalid(self.text, at, message)
    }

    /// How a token is named in messages.
    pub(super) fn describe(&self, t: &Token) -> String {
        match t.tok {
            Tok::End => "the end of the expression".to_string(),
            Tok::Str(_) => format!("the string {}", snippet(&self.text[t.start..t.end])),
            _ => format!("'{}'", snippet(&self.text[t.start..t.end])),
        }
    }

    /// How a parsed piece is named in messages.
    pub(super) fn quote(&self, n: &Node) -> String {
        let text = snippet(&self.text[n.start..n.end]);
        match n.expr {
            Expr::Constant(Constant::Str(_)) => format!("the string {text}"),
            _ => format!("'{text}'"),
        }
    }

    pub(super) fn unexpected(&self, t: &Token, expected: &str) -> SqlError {
        self.error(t.start, format!("{expected}, found {}", self.describe(t)))
    }

    /// One more level of nesting, refused past [`MAX_SQL_DEPTH`].
    pub(super) fn enter(&mut self, at: usize) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_SQL_DEPTH {
            return Err(self.error(at, format!("the expression nests deeper than {MAX_SQL_DEPTH} levels")));
        }
        Ok(())
    }

    /// A piece used as a condition (RocketMQ's `asBooleanExpression`): conditions as they
    /// are, a property tested for being true, anything else refused.
    pub(super) fn condition(&self, n: Node) -> Result<Expr, SqlError> {
        match n.expr {
            e if e.is_condition() => Ok(e),
            Expr::Property(_) => Ok(Expr::IsTrue(Box::new(n.expr))),
            _ => Err(self.error(
                n.start,
                format!("{} is not a condition: expected a comparison, a property, TRUE or FALSE", self.quote(&n)),
            )),
        }
    }

    pub(super) fn parse_or(&mut self) -> Result<Node, SqlError> {
        self.parse_chain(Keyword::Or, Self::parse_and, Expr::Or)
    }

    pub(super) fn parse_and(&mut self) -> Result<Node, SqlError> {
        self.parse_chain(Keyword::And, Self::parse_equality, Expr::And)
    }

    /// `operand (op operand)*`, every operand a condition when there are two or more.
    pub(super) fn parse_chain(
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

    pub(super) fn parse_equality(&mut self) -> Result<Node, SqlError> {
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

    pub(super) fn parse_comparison(&mut self) -> Result<Node, SqlError> {
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

    pub(super) fn parse_text_op(&mut self, left: Node, k: Keyword, negated: bool) -> Result<(Expr, usize), SqlError> {
        let (search, end) = self.expect_string(&format!("expected a string after {}", k.name()))?;
        let op = match k {
            Keyword::Contains => TextOp::Contains,
            Keyword::StartsWith => TextOp::StartsWith,
            _ => TextOp::EndsWith,
        };
        Ok((Expr::Text { value: Box::new(left.expr), op, search, negated }, end))
    }

    pub(super) fn parse_between(&mut self, value: Node, negated: bool) -> Result<(Expr, usize), SqlError> {
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
    pub(super) fn check_between_bounds(&self, low: &Node, high: &Node) -> Result<(), SqlError> {
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

    pub(super) fn parse_in(&mut self, left: Node, negated: bool) -> Result<(Expr, usize), SqlError> {
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
    pub(super) fn expect_string(&mut self, expected: &str) -> Result<(String, usize), SqlError> {
        let t = self.peek(0).clone();
        match t.tok {
            Tok::Str(s) => {
                self.bump();
                Ok((s, t.end))
            }
            _ => Err(self.unexpected(&t, expected)),
        }
    }

    pub(super) fn parse_unary(&mut self) -> Result<Node, SqlError> {
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

    pub(super) fn parse_primary(&mut self) -> Result<Node, SqlError> {
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
    pub(super) fn integer(&self, t: &Token) -> Result<Constant, SqlError> {
        let text = &self.text[t.start..t.end];
        let digits = text.strip_suffix(['l', 'L']).unwrap_or(text);
        let v: i64 = digits.parse().map_err(|_| {
            self.error(t.start, format!("integer {} is out of range; the largest is {}", snippet(text), i64::MAX))
        })?;
        Ok(i32::try_from(v).map_or(Constant::Long(v), Constant::Int))
    }

    /// A decimal literal: finite and above zero, as RocketMQ requires.
    pub(super) fn float(&self, t: &Token) -> Result<Constant, SqlError> {
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
    pub(super) fn check_ordered_operand(&self, n: &Node, symbol: &str) -> Result<(), SqlError> {
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
    pub(super) fn check_equal_operand(&self, n: &Node) -> Result<(), SqlError> {
        match n.expr {
            Expr::Constant(Constant::Null) => {
                Err(self.error(n.start, "NULL cannot be compared with '=' or '<>'; use IS NULL or IS NOT NULL"))
            }
            _ => Ok(()),
        }
    }

    /// `TRUE = 5` and the like: a boolean literal on the left of `=` or `<>` with a literal
    /// of another type on the right.
    pub(super) fn check_equal_compatible(&self, l: &Node, r: &Node) -> Result<(), SqlError> {
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
