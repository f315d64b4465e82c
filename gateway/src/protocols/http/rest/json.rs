//! JSON in and out of the REST API: bodies parsed strictly (unknown fields, wrong types and
//! malformed JSON are refused with a message that says what is wrong and where), answers
//! serialized, errors in Blynk's shape `{"error":{"message":"..."}}`, and path and query
//! parameters read into typed values.

use super::RestCall;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::http::Response;
use portcullis_protocol::store::TemplateId;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A refusal or failure, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorMessage<'a>,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    message: &'a str,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn response(&self) -> Response {
        let body = ErrorBody {
            error: ErrorMessage {
                message: &self.message,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let response = Response::new(self.status).with_body("application/json", bytes);
        if self.status == 401 {
            response.with_header("WWW-Authenticate", "Bearer")
        } else {
            response
        }
    }
}

/// A JSON answer with `status`.
pub fn reply(status: u16, value: &impl Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ApiError::new(500, format!("cannot serialize the answer: {e}")))?;
    Ok(Response::new(status).with_body("application/json", bytes))
}

/// `204 No Content`.
pub fn no_content() -> Result<Response, ApiError> {
    Ok(Response::new(204))
}

/// The body as `T`: refused when it is not JSON, has unknown fields or misses required ones.
pub fn body<T: DeserializeOwned>(call: &RestCall) -> Result<T, ApiError> {
    if call.body.is_empty() {
        return Err(ApiError::bad_request("A JSON body is required."));
    }
    serde_json::from_slice(&call.body).map_err(|e| {
        ApiError::bad_request(format!(
            "The body is not valid for this call: {e} (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })
}

/// A numeric path parameter.
pub fn id_param<T: std::str::FromStr>(call: &RestCall, name: &str) -> Result<T, ApiError> {
    let raw = call.param(name).unwrap_or_default();
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("The {name} id {raw:?} is not a number.")))
}

/// The `{org}` path parameter.
pub fn org_param(call: &RestCall) -> Result<OrgId, ApiError> {
    id_param(call, "org").map(OrgId)
}

/// A template id path parameter.
pub fn template_param(call: &RestCall) -> Result<TemplateId, ApiError> {
    let raw = call.param("template").unwrap_or_default();
    TemplateId::parse(raw).map_err(|why| ApiError::bad_request(format!("{why}.")))
}

/// The query's parameters, decoded; an unknown one is refused (a typo must not be ignored).
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn of(call: &RestCall, known: &[&str]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = call
            .query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if let Some((name, _)) = pairs.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            return Err(ApiError::bad_request(format!(
                "Unknown query parameter {name:?}; this call takes {}.",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(Query(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "The query parameter {name}={v:?} is not a number."
                    ))
                })
            })
            .transpose()
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "The query parameter {name}={other:?} must be true or false."
            ))),
        }
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}
