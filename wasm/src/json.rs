//! Reading the nodes' JSON answers with the host's own `JSON.parse`.
//!
//! The client module leaves serde_json's parser out: with it came its error messages, which
//! print floats, and together they were a third of the client-only `.wasm` (the 150 KB budget of
//! `scripts/build-wasm.sh`). Requests are still written with serde_json (the core's wire types),
//! which is small. The rules that read an answer are written once, against [`Json`], and tested
//! natively on `serde_json::Value`; in JavaScript they run on the parsed `JsValue`.

use wasm_bindgen::JsValue;

/// A parsed JSON value, as much of it as the client reads.
pub(crate) trait Json: Sized {
    fn parse(text: &str) -> Option<Self>;
    /// The member `key` of an object; `None` if absent (or if this is not an object).
    fn get(&self, key: &str) -> Option<Self>;
    fn as_str(&self) -> Option<String>;
    fn as_f64(&self) -> Option<f64>;
    fn as_bool(&self) -> Option<bool>;
    fn is_null(&self) -> bool;
    fn is_object(&self) -> bool;
    /// The items of an array.
    fn items(&self) -> Option<Vec<Self>>;

    /// A whole number `>= 0` that JavaScript holds exactly (a seq, an instance).
    fn as_u64(&self) -> Option<u64> {
        let n = self.as_f64()?;
        (n >= 0.0 && n.fract() == 0.0 && n <= MAX_SAFE).then_some(n as u64)
    }

    /// The member `key`, unless it is absent or `null`.
    fn field(&self, key: &str) -> Option<Self> {
        self.get(key).filter(|v| !v.is_null())
    }
}

/// The largest integer a JavaScript number holds exactly.
pub(crate) const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

impl Json for JsValue {
    fn parse(text: &str) -> Option<JsValue> {
        js_sys::JSON::parse(text).ok()
    }

    fn get(&self, key: &str) -> Option<JsValue> {
        if !self.is_object() {
            return None;
        }
        let v = crate::host::get(self, key);
        (!v.is_undefined()).then_some(v)
    }

    fn as_str(&self) -> Option<String> {
        self.as_string()
    }

    fn as_f64(&self) -> Option<f64> {
        JsValue::as_f64(self)
    }

    fn as_bool(&self) -> Option<bool> {
        JsValue::as_bool(self)
    }

    fn is_null(&self) -> bool {
        JsValue::is_null(self)
    }

    fn is_object(&self) -> bool {
        JsValue::is_object(self)
    }

    fn items(&self) -> Option<Vec<JsValue>> {
        js_sys::Array::is_array(self).then(|| js_sys::Array::from(self).iter().collect())
    }
}

#[cfg(test)]
impl Json for serde_json::Value {
    fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    fn get(&self, key: &str) -> Option<Self> {
        self.as_object()?.get(key).cloned()
    }

    fn as_str(&self) -> Option<String> {
        serde_json::Value::as_str(self).map(Into::into)
    }

    fn as_f64(&self) -> Option<f64> {
        serde_json::Value::as_f64(self)
    }

    fn as_bool(&self) -> Option<bool> {
        serde_json::Value::as_bool(self)
    }

    fn is_null(&self) -> bool {
        serde_json::Value::is_null(self)
    }

    fn is_object(&self) -> bool {
        serde_json::Value::is_object(self)
    }

    fn items(&self) -> Option<Vec<Self>> {
        self.as_array().cloned()
    }
}
