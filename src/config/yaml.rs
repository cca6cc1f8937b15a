//! Operations on untyped YAML values shared by the experiment loader and the grid expansion.
use serde_yaml::{Mapping, Value};

/// Recursive merge: mappings merge key by key, anything else replaces. A `model` whose `kind`
/// changes (`model: {kind: deepfm}` over a DLRM) replaces the old one: the old model's
/// settings mean nothing to the new one.
pub(super) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Mapping(b), Value::Mapping(p)) => {
            for (k, v) in p {
                let new_model = k.as_str() == Some("model")
                    && v.get("kind").is_some()
                    && b.get(&k).and_then(|m| m.get("kind")) != v.get("kind");
                match b.get_mut(&k) {
                    Some(slot) if new_model => *slot = v,
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `{a: {b: value}}` from the dotted path `a.b`.
pub(super) fn nested(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |inner, key| {
        let mut m = Mapping::new();
        m.insert(Value::String(key.to_string()), inner);
        Value::Mapping(m)
    })
}
