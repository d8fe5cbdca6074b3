//! Action parameters: each action declares a schema; a POST JSON body or a GET query string
//! (flattened `Filters.0.Values.1=…`, every value a string) is checked and coerced against it,
//! so that unknown, missing and ill-typed parameters each get their own error code and the
//! action receives well-typed JSON it can deserialise.

use serde_json::{Map, Number, Value};

use crate::error::{code, ApiError};

/// A parameter type, as the API reference names them.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// `String`.
    Str,
    /// `Integer` (signed 64-bit).
    Int,
    /// `UInt64`.
    UInt,
    /// `Boolean` (GET sends `True`/`true`/`false`…).
    Bool,
    /// A boolean the schema types as a string (`"true"`/`"false"`, e.g. `ForcePoweroff`).
    BoolStr,
    /// `Array of` the inner type.
    List(&'static Ty),
    /// An object with these fields.
    Obj(&'static [Field]),
    /// Any JSON value, taken as it is (settings imaged accepts and does not act on, such as
    /// TKE's `InstanceAdvancedSettings`); its strings are checked like every string.
    Any,
}

/// One field of an action's request or of a nested object.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Name, as on the wire.
    pub name: &'static str,
    /// Type.
    pub ty: Ty,
    /// Whether it must be present.
    pub required: bool,
}

/// An optional field.
pub const fn opt(name: &'static str, ty: Ty) -> Field {
    Field { name, ty, required: false }
}

/// A required field.
pub const fn req(name: &'static str, ty: Ty) -> Field {
    Field { name, ty, required: true }
}

/// `Filter = {Name R, Values R}`.
pub const FILTER: &[Field] = &[req("Name", Ty::Str), req("Values", Ty::List(&Ty::Str))];
/// `Tag = {Key, Value}`.
pub const TAG: &[Field] = &[req("Key", Ty::Str), req("Value", Ty::Str)];

/// Parses a POST body: a JSON object (an empty body counts as `{}`).
pub fn from_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::invalid_parameter("body", "the request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid_parameter("body", &format!("malformed JSON ({e})"))),
    }
}

/// Parses a GET query string into a JSON tree of strings: `A.0.B=x` becomes `{"A":[{"B":"x"}]}`.
pub fn from_query(query: &str) -> Result<Value, ApiError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key.is_empty() {
            continue;
        }
        let mut node = &mut root;
        for segment in key.split('.') {
            if segment.is_empty() {
                return Err(ApiError::invalid_parameter(&key, "empty path segment"));
            }
            let Value::Object(map) = node else {
                return Err(ApiError::invalid_parameter(&key, "given both as a value and as a structure"));
            };
            node = map.entry(segment.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        }
        match node {
            Value::Object(m) if m.is_empty() => *node = Value::String(value.into_owned()),
            _ => return Err(ApiError::invalid_parameter(&key, "given more than once")),
        }
    }
    Ok(lists_from_indexes(root))
}

/// Turns objects whose keys are all decimal indexes into arrays (in index order). Gaps are kept
/// as objects, which the schema then refuses as a type error.
fn lists_from_indexes(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let all_indexes = !map.is_empty() && map.keys().all(|k| k.bytes().all(|b| b.is_ascii_digit()));
            if all_indexes {
                let mut items: Vec<(usize, Value)> =
                    map.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, lists_from_indexes(v)))).collect();
                items.sort_by_key(|(i, _)| *i);
                if items.iter().enumerate().all(|(n, (i, _))| n == *i) {
                    return Value::Array(items.into_iter().map(|(_, v)| v).collect());
                }
                return Value::Object(items.into_iter().map(|(i, v)| (i.to_string(), v)).collect());
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, lists_from_indexes(v))).collect())
        }
        other => other,
    }
}

/// Items a list parameter may hold at most (Tencent caps its id lists at 100; actions with
/// smaller limits check them themselves).
pub const MAX_LIST_ITEMS: usize = 100;

/// Characters no string parameter may hold: C0 and C1 controls (NUL, escapes, newlines…) and
/// the bidirectional overrides and isolates, which make a name display as something else.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Checks and coerces `input` (a JSON object) against `fields`.
pub fn coerce(input: Value, fields: &[Field]) -> Result<Value, ApiError> {
    coerce_obj(input, fields, "")
}

fn path_of(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn coerce_obj(input: Value, fields: &[Field], prefix: &str) -> Result<Value, ApiError> {
    let Value::Object(mut map) = input else {
        let name = if prefix.is_empty() { "body" } else { prefix };
        return Err(ApiError::invalid_parameter(name, "expected an object"));
    };
    let mut out = Map::new();
    for field in fields {
        let path = path_of(prefix, field.name);
        match map.remove(field.name) {
            None | Some(Value::Null) if field.required => return Err(ApiError::missing(&path)),
            None | Some(Value::Null) => {}
            Some(v) => {
                out.insert(field.name.to_owned(), coerce_value(v, field.ty, &path)?);
            }
        }
    }
    if let Some(unknown) = map.keys().next() {
        let path = path_of(prefix, unknown);
        return Err(ApiError::new(
            code::UNKNOWN_PARAMETER,
            format!("The parameter `{path}` is not defined for this action."),
            format!("未定义的参数 `{path}`。"),
        ));
    }
    Ok(Value::Object(out))
}

fn coerce_value(v: Value, ty: Ty, path: &str) -> Result<Value, ApiError> {
    let type_error = |what: &str| ApiError::invalid_parameter(path, what);
    match ty {
        Ty::Str => match &v {
            Value::String(s) if s.chars().any(is_forbidden_char) => Err(ApiError::invalid_value(
                code::INVALID_PARAMETER_VALUE,
                format!("`{path}` contains a control or bidirectional-override character."),
            )),
            Value::String(_) => Ok(v),
            _ => Err(type_error("expected a string")),
        },
        Ty::Int => match &v {
            Value::Number(n) if n.is_i64() => Ok(v),
            Value::String(s) => {
                s.trim().parse::<i64>().map(|n| Value::Number(n.into())).map_err(|_| type_error("expected an integer"))
            }
            _ => Err(type_error("expected an integer")),
        },
        Ty::UInt => match &v {
            Value::Number(n) if n.is_u64() => Ok(v),
            Value::String(s) => s
                .trim()
                .parse::<u64>()
                .map(|n| Value::Number(Number::from(n)))
                .map_err(|_| type_error("expected a non-negative integer")),
            _ => Err(type_error("expected a non-negative integer")),
        },
        Ty::Bool | Ty::BoolStr => {
            let b = match &v {
                Value::Bool(b) => *b,
                Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Err(type_error("expected true or false")),
            };
            Ok(if matches!(ty, Ty::Bool) { Value::Bool(b) } else { Value::String(b.to_string()) })
        }
        Ty::List(_) if v.as_array().is_some_and(|a| a.len() > MAX_LIST_ITEMS) => Err(ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED,
            format!("`{path}` may hold at most {MAX_LIST_ITEMS} items."),
        )),
        Ty::List(inner) => match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| coerce_value(item, *inner, &format!("{path}.{i}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(type_error("expected a list")),
        },
        Ty::Obj(fields) => coerce_obj(v, fields, path),
        Ty::Any => {
            check_strings(&v, path)?;
            Ok(v)
        }
    }
}

/// Refuses control and bidirectional characters anywhere in `v`.
fn check_strings(v: &Value, path: &str) -> Result<(), ApiError> {
    match v {
        Value::String(s) if s.chars().any(is_forbidden_char) => Err(ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE,
            format!("`{path}` contains a control or bidirectional-override character."),
        )),
        Value::Array(items) => items.iter().try_for_each(|i| check_strings(i, path)),
        Value::Object(map) => map.values().try_for_each(|i| check_strings(i, path)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DESCRIBE: &[Field] = &[
        opt("ImageIds", Ty::List(&Ty::Str)),
        opt("Filters", Ty::List(&Ty::Obj(FILTER))),
        opt("Offset", Ty::UInt),
        opt("Limit", Ty::UInt),
        opt("DryRun", Ty::Bool),
        opt("ForcePoweroff", Ty::BoolStr),
        opt("Delta", Ty::Int),
    ];

    #[test]
    fn get_queries_flatten_into_typed_json() {
        let q = "Filters.0.Name=image-type&Filters.0.Values.0=PRIVATE_IMAGE&Filters.0.Values.1=SHARED_IMAGE\
                 &Limit=10&DryRun=True&ForcePoweroff=FALSE&Delta=-3&ImageIds.0=img-a%2Bb";
        let v = coerce(from_query(q).expect("parse"), DESCRIBE).expect("coerce");
        assert_eq!(
            v,
            json!({
                "Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE", "SHARED_IMAGE"]}],
                "Limit": 10, "DryRun": true, "ForcePoweroff": "false", "Delta": -3, "ImageIds": ["img-a+b"]
            })
        );
    }

    #[test]
    fn post_json_keeps_types_and_accepts_numeric_strings() {
        let v = from_json(br#"{"Limit": "5", "Offset": 2, "DryRun": false}"#).expect("parse");
        assert_eq!(coerce(v, DESCRIBE).expect("coerce"), json!({"Limit": 5, "Offset": 2, "DryRun": false}));
        assert_eq!(from_json(b"  ").expect("empty body"), json!({}));
    }

    #[test]
    fn control_and_bidi_characters_and_over_long_lists_are_refused() {
        let fields = &[opt("ImageName", Ty::Str), opt("ImageIds", Ty::List(&Ty::Str))];
        let refused = |v: Value| coerce(v, fields).expect_err("refused").code;
        for bad in
            ["a\u{0}b", "\u{1b}[31mred", "tab\there", "line\n", "\u{85}", "\u{9b}", "abc\u{202e}gpj.exe", "\u{2066}x"]
        {
            assert_eq!(refused(json!({"ImageName": bad})), code::INVALID_PARAMETER_VALUE, "{bad:?}");
            assert_eq!(refused(json!({"ImageIds": [bad]})), code::INVALID_PARAMETER_VALUE, "{bad:?} in a list");
        }
        assert!(coerce(json!({"ImageName": "名前 – ok (v2)"}), fields).is_ok());
        let many: Vec<String> = (0..=MAX_LIST_ITEMS).map(|i| format!("img-{i}")).collect();
        assert_eq!(refused(json!({"ImageIds": many})), code::INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED);
        assert!(coerce(json!({"ImageIds": &many[..MAX_LIST_ITEMS]}), fields).is_ok());
    }

    #[test]
    fn each_kind_of_bad_input_gets_its_own_code() {
        let err = |body: &str| from_json(body.as_bytes()).and_then(|v| coerce(v, DESCRIBE)).expect_err("must fail");
        let cases = [
            (r#"{"Colour": 1}"#, code::UNKNOWN_PARAMETER),
            (r#"{"Filters": [{"Name": "x", "Values": ["a"], "Extra": 1}]}"#, code::UNKNOWN_PARAMETER),
            (r#"{"Filters": [{"Values": ["a"]}]}"#, code::MISSING_PARAMETER),
            (r#"{"Limit": "ten"}"#, code::INVALID_PARAMETER),
            (r#"{"Limit": -1}"#, code::INVALID_PARAMETER),
            (r#"{"Limit": 1.5}"#, code::INVALID_PARAMETER),
            (r#"{"ImageIds": "img-x"}"#, code::INVALID_PARAMETER),
            (r#"{"ImageIds": [7]}"#, code::INVALID_PARAMETER),
            (r#"{"DryRun": "yes"}"#, code::INVALID_PARAMETER),
        ];
        for (body, expected) in cases {
            assert_eq!(err(body).code, expected, "{body}");
        }
        let missing = coerce(json!({"Filters": [{"Values": ["a"]}]}), DESCRIBE).expect_err("missing");
        assert!(missing.en.contains("Filters.0.Name"), "{}", missing.en);
        for bad in [&b"{"[..], b"[1,2]", b"\"str\"", b"nul"] {
            assert_eq!(from_json(bad).expect_err("bad json").code, code::INVALID_PARAMETER);
        }
    }

    #[test]
    fn malformed_flattening_is_refused() {
        for q in ["Limit=1&Limit=2", "A.0=x&A.0.B=y", "A..B=x", "ImageIds.1=x"] {
            let result = from_query(q).and_then(|v| coerce(v, DESCRIBE));
            assert!(result.is_err(), "{q} must be refused");
        }
    }
}
