//! A fast schema-conformance check for request entities in Cedar's explicit JSON form.
//!
//! Cedar validates every entity of a request against the schema when it builds the
//! request's `Entities`, and its checker rebuilds a description of the entity's type
//! for every entity (cloning the type's attribute map and scanning every type of the
//! schema for allowed parents), which made it the largest single cost of a check. This
//! module reads the schema once per compiled version into [`Shapes`] — per entity type,
//! its attribute types, allowed ancestor types and tag type — and checks an entity's
//! JSON against it with a few map lookups.
//!
//! The check only ever *accepts*: it answers `true` when the entity certainly conforms
//! (and Cedar would accept it), `false` for anything it does not fully understand or
//! that does not conform. On `false` the caller lets Cedar validate, so what is
//! accepted and how a refusal is worded stay Cedar's. Namespaced schemas, enumerated
//! and external entity types, open records and other rare forms are left to Cedar.

use std::collections::{HashMap, HashSet};

use cedar_policy::{EntityTypeName, EntityUid};
use serde_json::{Map, Value};

use crate::json::uid_parts;

/// The attribute type of a schema, as far as the fast check understands it.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Bool,
    Long,
    String,
    Set(Box<Ty>),
    Record(Record),
    /// An entity of this (declared, checkable) type.
    Entity(String),
    /// An extension type, named by its constructor (`ip`, `decimal`, `datetime`,
    /// `duration`).
    Extension(&'static str),
}

/// A closed record type: its attributes and whether each is required.
#[derive(Debug, Clone, Default, PartialEq)]
struct Record {
    attrs: HashMap<String, (Ty, bool)>,
}

/// What an entity of one type may hold.
#[derive(Debug, Clone, PartialEq)]
struct EntityShape {
    attrs: Record,
    /// Types an entity of this type may name as parents: its `memberOfTypes`,
    /// transitively (Cedar checks parents before computing the closure).
    ancestors: HashSet<String>,
    /// The type of its tags; `None`: it may have no tags.
    tags: Option<Ty>,
}

/// The entity types of a schema in the form the fast check reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shapes {
    /// Every entity type the fast check can decide on; types it leaves to Cedar are
    /// absent.
    types: HashMap<String, EntityShape>,
    /// Every action (by id, of type `Action`) whose requests the fast check can
    /// decide on.
    actions: HashMap<String, ActionShape>,
}

/// What a request for one action may name.
#[derive(Debug, Clone, PartialEq)]
struct ActionShape {
    principals: HashSet<String>,
    resources: HashSet<String>,
    context: Record,
}

/// Names of built-in and extension types, and of the JSON schema format's type kinds.
const RESERVED: [&str; 12] = [
    "Bool",
    "Boolean",
    "Long",
    "String",
    "Set",
    "Record",
    "Entity",
    "Extension",
    "ipaddr",
    "decimal",
    "datetime",
    "duration",
];

/// Nesting depth past which a type is left to Cedar (common types naming each other).
const MAX_DEPTH: usize = 32;

impl Shapes {
    /// The shapes of the schema made of `fragments` (each in Cedar's JSON schema
    /// format). Anything unusual leaves the affected types, or the whole schema, to
    /// Cedar.
    pub(crate) fn from_json_fragments(fragments: &[Value]) -> Self {
        let mut decls: HashMap<&str, &Map<String, Value>> = HashMap::new();
        let mut common: HashMap<&str, &Value> = HashMap::new();
        for fragment in fragments {
            let Some(namespaces) = fragment.as_object() else {
                return Self::default();
            };
            for (name, namespace) in namespaces {
                // Names in other namespaces resolve differently: left to Cedar.
                if !name.is_empty() {
                    return Self::default();
                }
                let Some(namespace) = namespace.as_object() else {
                    return Self::default();
                };
                if let Some(types) = namespace.get("entityTypes").and_then(Value::as_object) {
                    for (t, decl) in types {
                        if let Some(decl) = decl.as_object() {
                            decls.insert(t, decl);
                        }
                    }
                }
                if let Some(types) = namespace.get("commonTypes").and_then(Value::as_object) {
                    for (t, body) in types {
                        common.insert(t, body);
                    }
                }
            }
        }
        // A type named like a built-in one resolves by rules this check does not
        // repeat: Cedar decides.
        if decls
            .keys()
            .chain(common.keys())
            .any(|n| RESERVED.contains(n))
        {
            return Self::default();
        }
        let reader = Reader {
            decls: &decls,
            common: &common,
        };
        let mut types = HashMap::new();
        for (name, decl) in &decls {
            if let Some(shape) = reader.entity_shape(name, decl) {
                types.insert((*name).to_owned(), shape);
            }
        }
        // An attribute, parent or tag may only name types the check itself decides on
        // (an enumerated type's ids, say, are Cedar's to check): drop the types that
        // name others, until none does.
        loop {
            let names: HashSet<String> = types.keys().cloned().collect();
            let before = types.len();
            types.retain(|_, shape| {
                shape.attrs.names_only(&names)
                    && shape.ancestors.iter().all(|a| names.contains(a))
                    && shape.tags.as_ref().is_none_or(|t| t.names_only(&names))
            });
            if types.len() == before {
                break;
            }
        }
        let checked: HashSet<String> = types.keys().cloned().collect();
        let mut actions = HashMap::new();
        for fragment in fragments {
            let declared = fragment
                .get("")
                .and_then(|ns| ns.get("actions"))
                .and_then(Value::as_object);
            for (id, decl) in declared.into_iter().flatten() {
                if let Some(shape) = reader.action_shape(decl, &checked) {
                    actions.insert(id.clone(), shape);
                }
            }
        }
        Self { types, actions }
    }

    /// Whether a request of `principal`, `action` and `resource` with the context
    /// `context` (Cedar's explicit JSON: an object, or null for none) is certainly
    /// valid for the schema.
    pub(crate) fn admits_request(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        context: &Value,
    ) -> bool {
        let types = (
            unqualified(principal.type_name()),
            unqualified(action.type_name()),
            unqualified(resource.type_name()),
        );
        let (Some(principal), Some("Action"), Some(resource)) = types else {
            return false;
        };
        let Some(shape) = self.actions.get(action.id().unescaped()) else {
            return false;
        };
        let context_ok = match context {
            Value::Null => shape.context.attrs.values().all(|(_, required)| !required),
            Value::Object(obj) => {
                !obj.keys().any(|k| k.starts_with("__")) && shape.context.admits(obj)
            }
            _ => false,
        };
        shape.principals.contains(principal) && shape.resources.contains(resource) && context_ok
    }

    /// Whether the entity `value` (Cedar's explicit entity JSON, as
    /// [`crate::json::entity`] reads it) certainly conforms to the schema.
    pub(crate) fn conforms(&self, value: &Value) -> bool {
        let Some(obj) = value.as_object() else {
            return false;
        };
        let Some((own, _)) = obj.get("uid").and_then(uid_parts) else {
            return false;
        };
        let Some(shape) = self.types.get(own) else {
            return false;
        };
        let attrs_ok = match obj.get("attrs") {
            None => shape.attrs.attrs.values().all(|(_, required)| !required),
            Some(Value::Object(attrs)) => shape.attrs.admits(attrs),
            Some(_) => false,
        };
        let parents_ok = match obj.get("parents") {
            None => true,
            Some(Value::Array(parents)) => parents
                .iter()
                .all(|p| uid_parts(p).is_some_and(|(t, _)| shape.ancestors.contains(t))),
            Some(_) => false,
        };
        let tags_ok = match (obj.get("tags"), &shape.tags) {
            (None, _) => true,
            (Some(Value::Object(tags)), None) => tags.is_empty(),
            (Some(Value::Object(tags)), Some(ty)) => tags.values().all(|v| ty.admits(v)),
            (Some(_), _) => false,
        };
        attrs_ok && parents_ok && tags_ok
    }
}

/// The name of a type of the empty namespace (the only one the check reads), without
/// allocating; `None` for a namespaced type.
fn unqualified(t: &EntityTypeName) -> Option<&str> {
    t.namespace_components()
        .next()
        .is_none()
        .then(|| t.basename())
}

impl Record {
    fn admits(&self, value: &Map<String, Value>) -> bool {
        value
            .iter()
            .all(|(k, v)| self.attrs.get(k).is_some_and(|(ty, _)| ty.admits(v)))
            && self
                .attrs
                .iter()
                .all(|(k, (_, required))| !required || value.contains_key(k))
    }

    fn names_only(&self, names: &HashSet<String>) -> bool {
        self.attrs.values().all(|(ty, _)| ty.names_only(names))
    }
}

impl Ty {
    /// Whether the JSON `value` is certainly a value of this type.
    fn admits(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::Bool, Value::Bool(_)) | (Self::String, Value::String(_)) => true,
            (Self::Long, Value::Number(n)) => n.as_i64().is_some(),
            (Self::Set(element), Value::Array(items)) => items.iter().all(|i| element.admits(i)),
            (Self::Record(record), Value::Object(obj)) => {
                !obj.keys().any(|k| k.starts_with("__")) && record.admits(obj)
            }
            (Self::Entity(t), Value::Object(obj)) => {
                obj.len() == 1
                    && obj
                        .get("__entity")
                        .and_then(uid_parts)
                        .is_some_and(|(ty, _)| ty == t)
            }
            (Self::Extension(constructor), Value::Object(obj)) => {
                obj.len() == 1
                    && obj
                        .get("__extn")
                        .and_then(Value::as_object)
                        .is_some_and(|e| {
                            e.len() == 2
                                && e.get("arg").is_some_and(Value::is_string)
                                && e.get("fn").and_then(Value::as_str) == Some(constructor)
                        })
            }
            _ => false,
        }
    }

    /// Whether every entity type this type names is in `names`.
    fn names_only(&self, names: &HashSet<String>) -> bool {
        match self {
            Self::Bool | Self::Long | Self::String | Self::Extension(_) => true,
            Self::Set(element) => element.names_only(names),
            Self::Record(record) => record.names_only(names),
            Self::Entity(t) => names.contains(t),
        }
    }
}

/// Reads types out of the JSON schema.
struct Reader<'a> {
    decls: &'a HashMap<&'a str, &'a Map<String, Value>>,
    common: &'a HashMap<&'a str, &'a Value>,
}

impl Reader<'_> {
    fn entity_shape(&self, name: &str, decl: &Map<String, Value>) -> Option<EntityShape> {
        // `enum`, `external` and any key this check does not know: Cedar decides.
        if decl.keys().any(|k| {
            !matches!(
                k.as_str(),
                "memberOfTypes" | "shape" | "tags" | "annotations"
            )
        }) {
            return None;
        }
        let attrs = match decl.get("shape") {
            None => Record::default(),
            Some(shape) => match self.ty(shape, 0)? {
                Ty::Record(record) => record,
                _ => return None,
            },
        };
        let tags = match decl.get("tags") {
            None => None,
            Some(t) => Some(self.ty(t, 0)?),
        };
        Some(EntityShape {
            attrs,
            ancestors: self.ancestors(name)?,
            tags,
        })
    }

    /// An action's `appliesTo`, if every type it names is in `checked` (the types the
    /// check decides on).
    fn action_shape(&self, decl: &Value, checked: &HashSet<String>) -> Option<ActionShape> {
        let decl = decl.as_object()?;
        if decl
            .keys()
            .any(|k| !matches!(k.as_str(), "appliesTo" | "memberOf" | "annotations"))
        {
            return None;
        }
        let applies = decl.get("appliesTo")?.as_object()?;
        if applies
            .keys()
            .any(|k| !matches!(k.as_str(), "principalTypes" | "resourceTypes" | "context"))
        {
            return None;
        }
        let names = |key: &str| -> Option<HashSet<String>> {
            applies
                .get(key)?
                .as_array()?
                .iter()
                .map(|t| {
                    let t = t.as_str()?;
                    checked.contains(t).then(|| t.to_owned())
                })
                .collect()
        };
        let context = match applies.get("context") {
            None => Record::default(),
            Some(c) => match self.ty(c, 0)? {
                Ty::Record(record) => record,
                _ => return None,
            },
        };
        if !context.names_only(checked) {
            return None;
        }
        Some(ActionShape {
            principals: names("principalTypes")?,
            resources: names("resourceTypes")?,
            context,
        })
    }

    /// The transitive `memberOfTypes` of `name`.
    fn ancestors(&self, name: &str) -> Option<HashSet<String>> {
        let mut out = HashSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(t) = todo.pop() {
            let decl = self.decls.get(t.as_str())?;
            if let Some(parents) = decl.get("memberOfTypes") {
                for p in parents.as_array()? {
                    let p = p.as_str()?;
                    if !self.decls.contains_key(p) {
                        return None;
                    }
                    if out.insert(p.to_owned()) {
                        todo.push(p.to_owned());
                    }
                }
            }
        }
        Some(out)
    }

    /// A type expression of the JSON schema format.
    fn ty(&self, v: &Value, depth: usize) -> Option<Ty> {
        if depth > MAX_DEPTH {
            return None;
        }
        let obj = v.as_object()?;
        // Annotations are inert; anything else beside the type's own keys is unusual.
        let known = |keys: &[&str]| {
            obj.keys()
                .all(|k| k == "type" || k == "annotations" || keys.contains(&k.as_str()))
        };
        let kind = obj.get("type")?.as_str()?;
        match kind {
            "Boolean" | "Long" | "String" if known(&[]) => builtin(kind),
            "Set" if known(&["element"]) => {
                Some(Ty::Set(Box::new(self.ty(obj.get("element")?, depth + 1)?)))
            }
            "Record" if known(&["attributes", "additionalAttributes"]) => {
                if obj.get("additionalAttributes").is_some_and(|a| a != false) {
                    return None;
                }
                let mut record = Record::default();
                if let Some(attrs) = obj.get("attributes") {
                    for (k, a) in attrs.as_object()? {
                        let required = match a.get("required") {
                            None => true,
                            Some(r) => r.as_bool()?,
                        };
                        let ty = self.attribute(a, depth + 1)?;
                        record.attrs.insert(k.clone(), (ty, required));
                    }
                }
                Some(Ty::Record(record))
            }
            "Entity" if known(&["name"]) => {
                let name = obj.get("name")?.as_str()?;
                self.decls
                    .contains_key(name)
                    .then(|| Ty::Entity(name.to_owned()))
            }
            "Extension" if known(&["name"]) => extension(obj.get("name")?.as_str()?),
            "EntityOrCommon" if known(&["name"]) => self.named(obj.get("name")?.as_str()?, depth),
            "Boolean" | "Long" | "String" | "Set" | "Record" | "Entity" | "Extension"
            | "EntityOrCommon" => None,
            // Any other `type` names a common type.
            other if known(&[]) => self.common_type(other, depth),
            _ => None,
        }
    }

    /// An attribute declaration: a type expression plus `required`.
    fn attribute(&self, a: &Value, depth: usize) -> Option<Ty> {
        let mut obj = a.as_object()?.clone();
        obj.remove("required");
        self.ty(&Value::Object(obj), depth)
    }

    /// A name resolved as Cedar resolves it in the empty namespace: a common type, an
    /// entity type, then a built-in or extension type.
    fn named(&self, name: &str, depth: usize) -> Option<Ty> {
        if let Some(builtin_name) = name.strip_prefix("__cedar::") {
            return builtin(builtin_name).or_else(|| extension(builtin_name));
        }
        if name.contains("::") {
            return None;
        }
        if self.common.contains_key(name) {
            return self.common_type(name, depth);
        }
        if self.decls.contains_key(name) {
            return Some(Ty::Entity(name.to_owned()));
        }
        builtin(name).or_else(|| extension(name))
    }

    fn common_type(&self, name: &str, depth: usize) -> Option<Ty> {
        self.ty(self.common.get(name)?, depth + 1)
    }
}

fn builtin(name: &str) -> Option<Ty> {
    match name {
        "Bool" | "Boolean" => Some(Ty::Bool),
        "Long" => Some(Ty::Long),
        "String" => Some(Ty::String),
        _ => None,
    }
}

/// An extension type by its type name, as the constructor its JSON values name.
fn extension(name: &str) -> Option<Ty> {
    Some(Ty::Extension(match name {
        "ipaddr" => "ip",
        "decimal" => "decimal",
        "datetime" => "datetime",
        "duration" => "duration",
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use serde_json::json;

    use crate::compile::compile;
    use crate::model::{PolicySetDocument, SchemaDocument};

    const SCHEMA: &str = r#"
        type Meta = { created: Long, label?: String };
        entity Department;
        entity Team in [Department];
        entity Document in [Team] {
            owner: User,
            labels: Set<String>,
            meta: Meta,
            home?: __cedar::ipaddr,
            level: Long,
        } tags Bool;
        entity Color enum [ "red", "blue" ];
        entity Paint { color: Color };
        action view appliesTo { principal: User, resource: Document };
    "#;

    fn shapes(schema: SchemaDocument) -> super::Shapes {
        compile(
            &PolicySetDocument {
                schema: Some(schema),
                ..PolicySetDocument::default()
            },
            1,
        )
        .unwrap()
        .shapes
    }

    fn document() -> serde_json::Value {
        json!({
            "uid": { "type": "Document", "id": "d" },
            "attrs": {
                "owner": { "__entity": { "type": "User", "id": "alice" } },
                "labels": ["a", "b"],
                "meta": { "created": 3 },
                "home": { "__extn": { "fn": "ip", "arg": "10.0.0.1" } },
                "level": 2,
            },
            "parents": [{ "type": "Team", "id": "t" }, { "type": "Department", "id": "d" }],
            "tags": { "x": true },
        })
    }

    #[test]
    fn well_formed_entities_conform() {
        let shapes = shapes(SchemaDocument::Cedar(SCHEMA.into()));
        assert!(shapes.conforms(&document()));
        assert!(shapes.conforms(&json!({
            "uid": { "type": "User", "id": "u" },
            "attrs": { "email": "u@example.com" },
            "parents": [{ "type": "Role", "id": "admin" }],
        })));
        assert!(shapes.conforms(&json!({ "uid": { "type": "Role", "id": "r" } })));
    }

    #[test]
    fn requests_the_schema_admits() {
        let shapes = shapes(SchemaDocument::Cedar(
            r"entity Doc; action view appliesTo { principal: User, resource: Doc, context: { hour: Long, note?: String } };
              action list appliesTo { principal: User, resource: Doc };"
                .into(),
        ));
        let admits =
            |principal: &str, action: &str, resource: &str, context: &serde_json::Value| {
                let uid = |t: &str, id: &str| {
                    cedar_policy::EntityUid::from_str(&format!("{t}::\"{id}\"")).unwrap()
                };
                shapes.admits_request(
                    &uid(principal, "p"),
                    &uid("Action", action),
                    &uid(resource, "r"),
                    context,
                )
            };
        assert!(admits("User", "view", "Doc", &json!({ "hour": 3 })));
        assert!(admits(
            "User",
            "view",
            "Doc",
            &json!({ "hour": 3, "note": "x" })
        ));
        assert!(admits("User", "list", "Doc", &json!({})));
        assert!(admits("User", "list", "Doc", &serde_json::Value::Null));
        for (principal, action, resource, context) in [
            ("Doc", "view", "Doc", json!({ "hour": 3 })),
            ("User", "view", "User", json!({ "hour": 3 })),
            ("User", "edit", "Doc", json!({ "hour": 3 })),
            ("User", "view", "Doc", json!({})),
            ("User", "view", "Doc", serde_json::Value::Null),
            ("User", "view", "Doc", json!({ "hour": "3" })),
            ("User", "view", "Doc", json!({ "hour": 3, "extra": 1 })),
            ("User", "list", "Doc", json!({ "hour": 3 })),
            ("App::User", "view", "Doc", json!({ "hour": 3 })),
        ] {
            assert!(
                !admits(principal, action, resource, &context),
                "{principal} {action} {resource} {context}"
            );
        }
    }

    #[test]
    fn anything_wrong_or_unusual_is_left_to_cedar() {
        let shapes = shapes(SchemaDocument::Cedar(SCHEMA.into()));
        let wrong = [
            ("/attrs/level", json!("2")),
            ("/attrs/level", json!(2.5)),
            ("/attrs/labels", json!(["a", 1])),
            ("/attrs/meta", json!({ "created": 1, "other": 2 })),
            ("/attrs/meta", json!({ "label": "x" })),
            (
                "/attrs/owner",
                json!({ "__entity": { "type": "Team", "id": "t" } }),
            ),
            ("/attrs/owner", json!({ "type": "User", "id": "alice" })),
            (
                "/attrs/home",
                json!({ "__extn": { "fn": "decimal", "arg": "1.0" } }),
            ),
            ("/attrs/home", json!("10.0.0.1")),
            ("/parents/0", json!({ "type": "Role", "id": "r" })),
            ("/tags/x", json!("yes")),
            ("/uid/type", json!("Unknown")),
            ("/uid/type", json!("Action")),
        ];
        for (pointer, value) in wrong {
            let mut e = document();
            *e.pointer_mut(pointer).unwrap() = value.clone();
            assert!(!shapes.conforms(&e), "{pointer} = {value}");
        }
        let mut missing = document();
        missing["attrs"].as_object_mut().unwrap().remove("level");
        assert!(!shapes.conforms(&missing));
        let mut extra = document();
        extra["attrs"]["surprise"] = json!(1);
        assert!(!shapes.conforms(&extra));
        // Enumerated types, and the types naming them, are Cedar's to check.
        assert!(!shapes.conforms(&json!({ "uid": { "type": "Color", "id": "red" } })));
        assert!(!shapes.conforms(&json!({
            "uid": { "type": "Paint", "id": "p" },
            "attrs": { "color": { "__entity": { "type": "Color", "id": "red" } } },
        })));
    }

    #[test]
    fn json_schemas_and_namespaces() {
        let json = SchemaDocument::Json(
            json!({ "": {
                "entityTypes": {
                    "Doc": { "shape": { "type": "Record", "attributes": {
                        "n": { "type": "Long" },
                        "flag": { "type": "Boolean", "required": false },
                        "who": { "type": "Entity", "name": "User" },
                        "m": { "type": "Meta" },
                    } } }
                },
                "commonTypes": { "Meta": { "type": "Record", "attributes": { "s": { "type": "String" } } } },
                "actions": {}
            } })
            .to_string(),
        );
        let shapes = shapes(json);
        assert!(shapes.conforms(&json!({
            "uid": { "type": "Doc", "id": "d" },
            "attrs": { "n": 1, "who": { "__entity": { "type": "User", "id": "u" } }, "m": { "s": "x" } },
        })));
        let namespaced = shapes_of_namespace();
        assert!(namespaced.types.is_empty());
    }

    fn shapes_of_namespace() -> super::Shapes {
        shapes(SchemaDocument::Cedar(
            "namespace App { entity Doc; action view appliesTo { principal: Doc, resource: Doc }; }"
                .into(),
        ))
    }
}
