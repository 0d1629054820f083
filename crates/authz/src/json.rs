//! A fast path from Cedar's JSON formats to Cedar values. Cedar's own JSON parser is
//! general (schema-directed shorthands, many alternatives tried per value) and
//! dominates the cost of a check; most requests use the plain, explicit format, which
//! this module converts directly. Anything it does not recognise returns `None`, and
//! the caller falls back to Cedar's parser, so accepted input and error messages stay
//! Cedar's.

use cedar_policy::{Context, Entity, EntityId, EntityUid, RestrictedExpression};
use serde_json::Value;

/// The type and id texts of `{"type": "T", "id": "i"}` or
/// `{"__entity": {"type": "T", "id": "i"}}`.
pub(crate) fn uid_parts(v: &Value) -> Option<(&str, &str)> {
    let obj = v.as_object()?;
    let obj = match obj.get("__entity") {
        Some(inner) if obj.len() == 1 => inner.as_object()?,
        _ => obj,
    };
    if obj.len() != 2 {
        return None;
    }
    Some((obj.get("type")?.as_str()?, obj.get("id")?.as_str()?))
}

/// The uid of [`uid_parts`]'s forms.
fn uid(v: &Value) -> Option<EntityUid> {
    let (type_text, id) = uid_parts(v)?;
    Some(EntityUid::from_type_name_and_id(
        crate::names::type_name(type_text)?,
        EntityId::new(id),
    ))
}

/// A value in Cedar's explicit JSON form: booleans, integers, strings, sets,
/// records, `{"__entity": …}` and `{"__extn": {"fn": …, "arg": …}}`.
fn value(v: &Value) -> Option<RestrictedExpression> {
    Some(match v {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().map(value).collect::<Option<Vec<_>>>()?)
        }
        Value::Object(obj) => {
            if let Some(inner) = obj.get("__entity") {
                if obj.len() != 1 {
                    return None;
                }
                RestrictedExpression::new_entity_uid(uid(inner)?)
            } else if let Some(extn) = obj.get("__extn") {
                if obj.len() != 1 {
                    return None;
                }
                let extn = extn.as_object()?;
                crate::names::extension(extn.get("fn")?.as_str()?, extn.get("arg")?.as_str()?)?
            } else if obj.contains_key("__expr") {
                return None;
            } else {
                RestrictedExpression::new_record(record(obj)?).ok()?
            }
        }
        Value::Null => return None,
    })
}

fn record(obj: &serde_json::Map<String, Value>) -> Option<Vec<(String, RestrictedExpression)>> {
    obj.iter()
        .map(|(k, v)| Some((k.clone(), value(v)?)))
        .collect()
}

/// An entity in Cedar's explicit entity JSON format.
pub(crate) fn entity(v: &Value) -> Option<Entity> {
    let obj = v.as_object()?;
    if obj
        .keys()
        .any(|k| !matches!(k.as_str(), "uid" | "attrs" | "parents" | "tags"))
    {
        return None;
    }
    let own = uid(obj.get("uid")?)?;
    let attrs = match obj.get("attrs") {
        None => Vec::new(),
        Some(a) => record(a.as_object()?)?,
    };
    let parents = match obj.get("parents") {
        None => Vec::new(),
        Some(p) => p.as_array()?.iter().map(uid).collect::<Option<Vec<_>>>()?,
    };
    let tags = match obj.get("tags") {
        None => Vec::new(),
        Some(t) => record(t.as_object()?)?,
    };
    Entity::new_with_tags(own, attrs, parents, tags).ok()
}

/// A context record in Cedar's explicit JSON form.
pub(crate) fn context(v: &Value) -> Option<Context> {
    Context::from_pairs(record(v.as_object()?)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::Entities;
    use serde_json::json;

    #[test]
    fn explicit_entities_convert_like_cedars_parser() {
        let json = json!([
            { "uid": { "type": "User", "id": "alice" }, "attrs": { "age": 7, "tags": ["a", "b"], "home": { "__extn": { "fn": "ip", "arg": "10.0.0.1" } },
              "boss": { "__entity": { "type": "User", "id": "bob" } }, "address": { "city": "Oslo" } },
              "parents": [{ "type": "Role", "id": "admin" }] },
            { "uid": { "__entity": { "type": "Role", "id": "admin" } }, "attrs": {}, "parents": [] }
        ]);
        let fast: Vec<Entity> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|e| entity(e).unwrap())
            .collect();
        let fast = Entities::from_entities(fast, None).unwrap();
        let cedar = Entities::from_json_value(json, None).unwrap();
        for e in cedar.iter() {
            assert_eq!(fast.get(&e.uid()), Some(e));
        }
    }

    #[test]
    fn unusual_forms_fall_back() {
        assert!(
            entity(&json!({ "uid": { "type": "User", "id": "a" }, "attrs": { "x": 1.5 } }))
                .is_none()
        );
        assert!(entity(&json!({ "uid": { "type": "User", "id": "a" }, "extra": 1 })).is_none());
        assert!(entity(&json!({ "uid": "User::\"a\"" })).is_none());
        assert!(context(&json!({ "f": { "__extn": { "fn": "unknown", "arg": "x" } } })).is_none());
        assert!(context(&json!({ "n": null })).is_none());
        assert!(context(&json!({ "ok": true })).is_some());
    }
}
