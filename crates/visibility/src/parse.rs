//! The list-filter language: a lexer and a recursive-descent parser from the text after
//! `WHERE` to a typed [`Query`]. Errors name the offending token and its position.
use std::fmt;

/// A parsed filter, with the optional `GROUP BY` of a count.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `None` matches every workflow.
    pub filter: Option<Expr>,
    /// The attribute named by `GROUP BY`.
    pub group_by: Option<String>,
}

/// A boolean filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `attr op value`.
    Compare {
        attr: String,
        op: CmpOp,
        value: Literal,
    },
    /// `attr [NOT] IN (v, ...)`.
    In {
        attr: String,
        values: Vec<Literal>,
        negated: bool,
    },
    /// `attr [NOT] BETWEEN low AND high`.
    Between {
        attr: String,
        low: Literal,
        high: Literal,
        negated: bool,
    },
    /// `attr [NOT] STARTS_WITH 'prefix'`.
    StartsWith {
        attr: String,
        prefix: String,
        negated: bool,
    },
    /// `attr IS [NOT] NULL`.
    IsNull {
        attr: String,
        negated: bool,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl CmpOp {
    /// The operator as SQL writes it.
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        }
    }
}

/// A literal value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "'{s}'"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Why a filter was refused. `position` is the byte offset of the offending token.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub message: String,
    pub position: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
    /// A keyword, upper-cased.
    Kw(&'static str),
    /// Anything else (`*`, `;`, `+`...).
    Other(char),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s}"),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Int(i) => write!(f, "{i}"),
            Tok::Float(x) => write!(f, "{x}"),
            Tok::Op(op) => write!(f, "{}", op.sql()),
            Tok::LParen => f.write_str("("),
            Tok::RParen => f.write_str(")"),
            Tok::Comma => f.write_str(","),
            Tok::Kw(k) => f.write_str(k),
            Tok::Other(c) => write!(f, "{c}"),
        }
    }
}

const KEYWORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "IS",
    "NULL",
    "STARTS_WITH",
    "TRUE",
    "FALSE",
    "ORDER",
    "GROUP",
    "BY",
    "LIMIT",
    "LIKE",
    "ASC",
    "DESC",
];

fn lex(input: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = input[i..].chars().next().expect("in bounds");
        let start = i;
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '=' => {
                i += if bytes.get(i + 1) == Some(&b'=') {
                    2
                } else {
                    1
                };
                Tok::Op(CmpOp::Eq)
            }
            '!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op(CmpOp::Ne)
            }
            '<' => match bytes.get(i + 1) {
                Some(b'=') => {
                    i += 2;
                    Tok::Op(CmpOp::Le)
                }
                Some(b'>') => {
                    i += 2;
                    Tok::Op(CmpOp::Ne)
                }
                _ => {
                    i += 1;
                    Tok::Op(CmpOp::Lt)
                }
            },
            '>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Op(CmpOp::Ge)
                } else {
                    i += 1;
                    Tok::Op(CmpOp::Gt)
                }
            }
            '\'' | '"' | '`' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(ch) = input[i..].chars().next() else {
                        return Err(ParseError {
                            message: format!(
                                "unterminated {} starting at position {start}",
                                if quote == '`' { "name" } else { "string" }
                            ),
                            position: start,
                        });
                    };
                    i += ch.len_utf8();
                    if ch == '\\' && quote != '`' {
                        let Some(next) = input[i..].chars().next() else {
                            continue;
                        };
                        i += next.len_utf8();
                        s.push(match next {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else if ch == quote {
                        // A doubled quote stands for itself.
                        if input[i..].starts_with(quote) {
                            s.push(quote);
                            i += quote.len_utf8();
                        } else {
                            break;
                        }
                    } else {
                        s.push(ch);
                    }
                }
                if quote == '`' {
                    Tok::Ident(s)
                } else {
                    Tok::Str(s)
                }
            }
            c if c.is_ascii_digit()
                || (c == '-'
                    && bytes
                        .get(i + 1)
                        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')) =>
            {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_digit()
                        || bytes[i] == b'.'
                        || bytes[i] == b'e'
                        || bytes[i] == b'E'
                        || ((bytes[i] == b'-' || bytes[i] == b'+')
                            && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let text = &input[start..i];
                if let Ok(n) = text.parse::<i64>() {
                    Tok::Int(n)
                } else if let Ok(x) = text.parse::<f64>() {
                    Tok::Float(x)
                } else {
                    return Err(ParseError {
                        message: format!("invalid number '{text}' at position {start}"),
                        position: start,
                    });
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < bytes.len() {
                    let ch = input[i..].chars().next().expect("in bounds");
                    if ch.is_alphanumeric() || ch == '_' || ch == '.' || ch == '-' {
                        i += ch.len_utf8();
                    } else {
                        break;
                    }
                }
                let word = &input[start..i];
                let upper = word.to_ascii_uppercase();
                match KEYWORDS.iter().find(|k| **k == upper) {
                    Some(k) => Tok::Kw(k),
                    None => Tok::Ident(word.to_string()),
                }
            }
            other => {
                i += other.len_utf8();
                Tok::Other(other)
            }
        };
        out.push((tok, start));
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    input: &'a str,
    /// Open parentheses and NOTs around the current position.
    depth: usize,
    /// Comparisons read so far.
    predicates: usize,
}

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Deepest nesting of parentheses and NOTs.
pub const MAX_DEPTH: usize = 64;
/// Most comparisons in one query.
pub const MAX_PREDICATES: usize = 256;

/// Parses a filter (the text after `WHERE`), with an optional trailing `GROUP BY name`.
pub fn parse(input: &str) -> Result<Query, ParseError> {
    if input.len() > MAX_QUERY_BYTES {
        return Err(ParseError {
            message: format!("the query is longer than {MAX_QUERY_BYTES} bytes"),
            position: MAX_QUERY_BYTES,
        });
    }
    let toks = lex(input)?;
    let mut p = Parser {
        toks,
        pos: 0,
        input,
        depth: 0,
        predicates: 0,
    };
    let filter = if p.at_end() || p.peek_kw("GROUP") || p.peek_kw("ORDER") || p.peek_kw("LIMIT") {
        None
    } else {
        Some(p.or_expr()?)
    };
    let mut group_by = None;
    if p.peek_kw("GROUP") {
        p.pos += 1;
        p.expect_kw("BY")?;
        group_by = Some(p.ident("an attribute name after GROUP BY")?);
    }
    if p.peek_kw("ORDER") {
        return Err(p.error_here("operation is not supported: 'ORDER BY' clause"));
    }
    if p.peek_kw("LIMIT") {
        return Err(p.error_here("operation is not supported: 'LIMIT' clause"));
    }
    if !p.at_end() {
        return Err(p.unexpected("AND, OR, GROUP BY or the end of the query"));
    }
    Ok(Query { filter, group_by })
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Kw(k)) if *k == kw)
    }

    fn position(&self) -> usize {
        self.toks.get(self.pos).map_or(self.input.len(), |t| t.1)
    }

    fn error_here(&self, message: &str) -> ParseError {
        ParseError {
            message: message.to_string(),
            position: self.position(),
        }
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        match self.peek() {
            Some(tok) => ParseError {
                message: format!(
                    "malformed SQL query: syntax error at position {}: expected {expected}, found '{tok}'",
                    self.position()
                ),
                position: self.position(),
            },
            None => ParseError {
                message: format!(
                    "malformed SQL query: syntax error: expected {expected}, found the end of the query"
                ),
                position: self.input.len(),
            },
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.peek_kw(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Ident(name)) => {
                let name = name.clone();
                self.pos += 1;
                Ok(name)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn or_expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and_expr()?;
        while self.peek_kw("OR") {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not_expr()?;
        while self.peek_kw("AND") {
            self.pos += 1;
            let right = self.not_expr()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn nest(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(&format!(
                "the query nests parentheses and NOTs deeper than {MAX_DEPTH}"
            )));
        }
        Ok(())
    }

    fn not_expr(&mut self) -> Result<Expr, ParseError> {
        if self.peek_kw("NOT") {
            self.pos += 1;
            self.nest()?;
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            self.nest()?;
            let inner = self.or_expr()?;
            self.depth -= 1;
            if self.peek() != Some(&Tok::RParen) {
                return Err(self.unexpected("')'"));
            }
            self.pos += 1;
            return Ok(inner);
        }
        self.predicates += 1;
        if self.predicates > MAX_PREDICATES {
            return Err(self.error_here(&format!(
                "the query has more than {MAX_PREDICATES} comparisons"
            )));
        }
        let attr = self.ident("an attribute name or '('")?;
        match self.peek().cloned() {
            Some(Tok::Op(op)) => {
                self.pos += 1;
                let value = self.literal()?;
                Ok(Expr::Compare { attr, op, value })
            }
            Some(Tok::Kw("IS")) => {
                self.pos += 1;
                let negated = if self.peek_kw("NOT") {
                    self.pos += 1;
                    true
                } else {
                    false
                };
                self.expect_kw("NULL")?;
                Ok(Expr::IsNull { attr, negated })
            }
            Some(Tok::Kw("NOT")) => {
                self.pos += 1;
                self.negatable(attr, true)
            }
            Some(Tok::Kw("IN" | "BETWEEN" | "STARTS_WITH")) => self.negatable(attr, false),
            Some(Tok::Kw("LIKE")) => Err(self.error_here(
                "operation is not supported: LIKE (use STARTS_WITH for a prefix, or = on a Text attribute)",
            )),
            Some(Tok::LParen) => Err(self.error_here(&format!(
                "operation is not supported: function calls ('{attr}(' at position {})",
                self.position()
            ))),
            _ => Err(self.unexpected(&format!(
                "a comparison after '{attr}' (=, !=, <, >, <=, >=, IN, BETWEEN, STARTS_WITH, IS NULL)"
            ))),
        }
    }

    fn negatable(&mut self, attr: String, negated: bool) -> Result<Expr, ParseError> {
        match self.peek() {
            Some(Tok::Kw("IN")) => {
                self.pos += 1;
                if self.peek() != Some(&Tok::LParen) {
                    return Err(self.unexpected("'(' after IN"));
                }
                self.pos += 1;
                let mut values = vec![self.literal()?];
                while self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    values.push(self.literal()?);
                }
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.unexpected("',' or ')'"));
                }
                self.pos += 1;
                Ok(Expr::In {
                    attr,
                    values,
                    negated,
                })
            }
            Some(Tok::Kw("BETWEEN")) => {
                self.pos += 1;
                let low = self.literal()?;
                self.expect_kw("AND")?;
                let high = self.literal()?;
                Ok(Expr::Between {
                    attr,
                    low,
                    high,
                    negated,
                })
            }
            Some(Tok::Kw("STARTS_WITH")) => {
                self.pos += 1;
                match self.literal()? {
                    Literal::Str(prefix) => Ok(Expr::StartsWith {
                        attr,
                        prefix,
                        negated,
                    }),
                    other => Err(ParseError {
                        message: format!("STARTS_WITH needs a string, found {other}"),
                        position: self.toks[self.pos - 1].1,
                    }),
                }
            }
            _ => Err(self.unexpected("IN, BETWEEN or STARTS_WITH after NOT")),
        }
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        let value = match self.peek() {
            Some(Tok::Str(s)) => Literal::Str(s.clone()),
            Some(Tok::Int(i)) => Literal::Int(*i),
            Some(Tok::Float(x)) => Literal::Float(*x),
            Some(Tok::Kw("TRUE")) => Literal::Bool(true),
            Some(Tok::Kw("FALSE")) => Literal::Bool(false),
            Some(Tok::Ident(name)) => {
                return Err(ParseError {
                    message: format!(
                        "operation is not supported: column name on the right side of comparison expression (did you forget to quote \"{name}\"?) at position {}",
                        self.position()
                    ),
                    position: self.position(),
                });
            }
            _ => return Err(self.unexpected("a value (a quoted string, a number, true or false)")),
        };
        self.pos += 1;
        Ok(value)
    }
}

/// The canonical form of a filter: every operation parenthesized, values quoted.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |n: &bool| if *n { "NOT " } else { "" };
        match self {
            Expr::And(a, b) => write!(f, "({a} AND {b})"),
            Expr::Or(a, b) => write!(f, "({a} OR {b})"),
            Expr::Not(a) => write!(f, "(NOT {a})"),
            Expr::Compare { attr, op, value } => write!(f, "{attr} {} {value}", op.sql()),
            Expr::In {
                attr,
                values,
                negated,
            } => {
                let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                write!(f, "{attr} {}IN ({})", not(negated), list.join(", "))
            }
            Expr::Between {
                attr,
                low,
                high,
                negated,
            } => write!(f, "{attr} {}BETWEEN {low} AND {high}", not(negated)),
            Expr::StartsWith {
                attr,
                prefix,
                negated,
            } => write!(f, "{attr} {}STARTS_WITH '{prefix}'", not(negated)),
            Expr::IsNull { attr, negated } => write!(f, "{attr} IS {}NULL", not(negated)),
        }
    }
}
