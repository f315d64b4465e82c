//! The router: routes of (method, path pattern) to a value the caller picks — an enum of
//! endpoints, a handler, anything. A pattern is a path of fixed segments and named parameters,
//! `/devices/{id}/pins/{pin}`; a parameter matches one non-empty segment. A match yields the value
//! and the parameters; a miss is 404, or 405 with the `Allow` header when the path exists under
//! other methods. Sans-IO and generic, so it is tested without sockets and reused by every port.
//!
//! Matching is on the raw, still percent-encoded path. When several patterns match one path, the
//! one with a fixed segment where the other has a parameter (the first place they differ) wins,
//! whatever the order the routes were added in. HEAD is answered by the GET route when there is
//! no HEAD route (RFC 9110 §9.3.2); the writer then leaves out the body.

use super::Method;
use super::response::Response;
use std::cmp::Ordering;
use thiserror::Error;

/// A route table that cannot be built: always the caller's (the programmer's) fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    #[error("route pattern {0:?} does not start with /")]
    NotAPath(String),
    #[error("route pattern {pattern:?}: segment {segment:?} mixes text and a parameter")]
    BadSegment { pattern: String, segment: String },
    #[error("route pattern {pattern:?} names parameter {name:?} twice")]
    DuplicateParameter { pattern: String, name: String },
    #[error("route {method} {pattern:?} is already taken by an equivalent pattern")]
    Duplicate { method: Method, pattern: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Fixed(String),
    Parameter(String),
}

#[derive(Debug, Clone)]
struct Route<T> {
    method: Method,
    pattern: String,
    segments: Vec<Segment>,
    value: T,
}

/// A matched route: the caller's value and the parameters' raw (percent-encoded) values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'r, 'p, T> {
    pub value: &'r T,
    /// (name, value) of each parameter, in pattern order.
    pub params: Vec<(&'r str, &'p str)>,
}

impl<'p, T> Match<'_, 'p, T> {
    /// The value of the parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&'p str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| *value)
    }
}

/// Why no route answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No route has this path: 404.
    NotFound,
    /// Routes have this path, under these methods only: 405.
    MethodNotAllowed { allow: Vec<Method> },
}

impl Miss {
    pub fn status(&self) -> u16 {
        match self {
            Miss::NotFound => 404,
            Miss::MethodNotAllowed { .. } => 405,
        }
    }

    /// The `Allow` header value of a 405 (`GET, HEAD`).
    pub fn allow(&self) -> Option<String> {
        match self {
            Miss::NotFound => None,
            Miss::MethodNotAllowed { allow } => Some(
                allow
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        }
    }

    /// The answer: the status, `Allow` for a 405, and `text` as a plain-text body.
    pub fn response(&self, text: impl Into<String>) -> Response {
        let response = Response::text(self.status(), text);
        match self.allow() {
            Some(allow) => response.with_header("Allow", allow),
            None => response,
        }
    }
}

/// A route table, generic over what a route leads to.
#[derive(Debug, Clone)]
pub struct Router<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<T> Router<T> {
    pub fn new() -> Router<T> {
        Router::default()
    }

    /// Adds `method pattern → value`. Refuses malformed patterns and a pattern equivalent to one
    /// already routed under `method` (same segments, parameters in the same places).
    pub fn add(&mut self, method: Method, pattern: &str, value: T) -> Result<(), RouteError> {
        let segments = parse_pattern(pattern)?;
        let equivalent = |route: &Route<T>| {
            route.method == method
                && route.segments.len() == segments.len()
                && route.segments.iter().zip(&segments).all(|pair| match pair {
                    (Segment::Fixed(a), Segment::Fixed(b)) => a == b,
                    (Segment::Parameter(_), Segment::Parameter(_)) => true,
                    _ => false,
                })
        };
        if self.routes.iter().any(equivalent) {
            return Err(RouteError::Duplicate {
                method,
                pattern: pattern.to_owned(),
            });
        }
        self.routes.push(Route {
            method,
            pattern: pattern.to_owned(),
            segments,
            value,
        });
        Ok(())
    }

    /// [`add`](Self::add), chained, for tables built from constants.
    pub fn with(mut self, method: Method, pattern: &str, value: T) -> Result<Self, RouteError> {
        self.add(method, pattern, value)?;
        Ok(self)
    }

    /// The route for `method path`, or why there is none.
    pub fn route<'r, 'p>(
        &'r self,
        method: Method,
        path: &'p str,
    ) -> Result<Match<'r, 'p, T>, Miss> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(Miss::NotFound);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let matching: Vec<&Route<T>> = self
            .routes
            .iter()
            .filter(|route| matches(&route.segments, &parts))
            .collect();
        let best = |wanted: Method| {
            matching
                .iter()
                .filter(|route| route.method == wanted)
                .max_by(|a, b| specificity(&a.segments, &b.segments))
        };
        let found = best(method).or_else(|| match method {
            Method::Head => best(Method::Get),
            _ => None,
        });
        if let Some(route) = found {
            let params = route
                .segments
                .iter()
                .zip(&parts)
                .filter_map(|(segment, part)| match segment {
                    Segment::Parameter(name) => Some((name.as_str(), *part)),
                    Segment::Fixed(_) => None,
                })
                .collect();
            return Ok(Match {
                value: &route.value,
                params,
            });
        }
        if matching.is_empty() {
            return Err(Miss::NotFound);
        }
        let mut allow: Vec<Method> = matching.iter().map(|route| route.method).collect();
        if allow.contains(&Method::Get) {
            allow.push(Method::Head);
        }
        allow.sort();
        allow.dedup();
        Err(Miss::MethodNotAllowed { allow })
    }

    /// Every route as (method, pattern), in the order added.
    pub fn routes(&self) -> impl Iterator<Item = (Method, &str)> {
        self.routes.iter().map(|r| (r.method, r.pattern.as_str()))
    }
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, RouteError> {
    let rest = pattern
        .strip_prefix('/')
        .ok_or_else(|| RouteError::NotAPath(pattern.to_owned()))?;
    let mut segments = Vec::new();
    for part in rest.split('/') {
        let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                if segments.contains(&Segment::Parameter(name.to_owned())) {
                    return Err(RouteError::DuplicateParameter {
                        pattern: pattern.to_owned(),
                        name: name.to_owned(),
                    });
                }
                Segment::Parameter(name.to_owned())
            }
            _ if part.contains(['{', '}']) => {
                return Err(RouteError::BadSegment {
                    pattern: pattern.to_owned(),
                    segment: part.to_owned(),
                });
            }
            _ => Segment::Fixed(part.to_owned()),
        };
        segments.push(segment);
    }
    Ok(segments)
}

fn matches(segments: &[Segment], parts: &[&str]) -> bool {
    segments.len() == parts.len()
        && segments
            .iter()
            .zip(parts)
            .all(|(segment, part)| match segment {
                Segment::Fixed(text) => text == part,
                Segment::Parameter(_) => !part.is_empty(),
            })
}

/// `Greater` for the more specific of two patterns that match the same path: the one with the
/// fixed segment at the first place where one has a fixed segment and the other a parameter.
fn specificity(a: &[Segment], b: &[Segment]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|pair| match pair {
            (Segment::Fixed(_), Segment::Parameter(_)) => Ordering::Greater,
            (Segment::Parameter(_), Segment::Fixed(_)) => Ordering::Less,
            _ => Ordering::Equal,
        })
        .find(|order| order.is_ne())
        .unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Endpoint {
        Devices,
        Device,
        DeviceMe,
        Pin,
        CreateDevice,
        Root,
    }

    fn router() -> Router<Endpoint> {
        Router::new()
            .with(Method::Get, "/devices", Endpoint::Devices)
            .and_then(|r| r.with(Method::Post, "/devices", Endpoint::CreateDevice))
            .and_then(|r| r.with(Method::Get, "/devices/{id}", Endpoint::Device))
            .and_then(|r| r.with(Method::Get, "/devices/me", Endpoint::DeviceMe))
            .and_then(|r| r.with(Method::Put, "/devices/{id}/pins/{pin}", Endpoint::Pin))
            .and_then(|r| r.with(Method::Get, "/", Endpoint::Root))
            .expect("valid table")
    }

    #[test]
    fn fixed_paths_and_parameters() {
        let r = router();
        let found = r.route(Method::Get, "/devices").expect("routed");
        assert_eq!((*found.value, found.params.len()), (Endpoint::Devices, 0));
        let found = r.route(Method::Put, "/devices/42/pins/v3").expect("routed");
        assert_eq!(*found.value, Endpoint::Pin);
        assert_eq!(found.param("id"), Some("42"));
        assert_eq!(found.param("pin"), Some("v3"));
        assert_eq!(found.param("nope"), None);
        assert_eq!(
            *r.route(Method::Get, "/").expect("root").value,
            Endpoint::Root
        );
    }

    #[test]
    fn a_fixed_segment_beats_a_parameter_whatever_the_order() {
        let r = router();
        assert_eq!(
            *r.route(Method::Get, "/devices/me").expect("me").value,
            Endpoint::DeviceMe
        );
        assert_eq!(
            *r.route(Method::Get, "/devices/7").expect("7").value,
            Endpoint::Device
        );
    }

    #[test]
    fn unknown_paths_are_404_known_paths_under_other_methods_405_with_allow() {
        let r = router();
        for path in [
            "/nope",
            "/devices/",
            "/devices/1/pins",
            "//",
            "devices",
            "",
            "/devices/1/pins/",
        ] {
            assert_eq!(r.route(Method::Get, path), Err(Miss::NotFound), "{path:?}");
        }
        let miss = r.route(Method::Delete, "/devices").expect_err("405");
        assert_eq!(miss.status(), 405);
        assert_eq!(miss.allow().as_deref(), Some("GET, HEAD, POST"));
        let response = miss.response("no\n");
        assert_eq!(response.header("allow"), Some("GET, HEAD, POST"));
        assert_eq!(
            r.route(Method::Get, "/devices/1/pins/2")
                .expect_err("405")
                .allow()
                .as_deref(),
            Some("PUT")
        );
        assert_eq!(Miss::NotFound.response("x").header("allow"), None);
    }

    #[test]
    fn head_falls_back_to_get() {
        let r = router();
        assert_eq!(
            *r.route(Method::Head, "/devices/9").expect("head").value,
            Endpoint::Device
        );
        assert!(r.route(Method::Head, "/devices/1/pins/2").is_err());
    }

    #[test]
    fn malformed_and_duplicate_patterns_are_refused() {
        let mut r: Router<u8> = Router::new();
        assert!(matches!(
            r.add(Method::Get, "x", 0),
            Err(RouteError::NotAPath(_))
        ));
        assert!(matches!(
            r.add(Method::Get, "/a{b}", 0),
            Err(RouteError::BadSegment { .. })
        ));
        assert!(matches!(
            r.add(Method::Get, "/{}", 0),
            Err(RouteError::BadSegment { .. })
        ));
        assert!(matches!(
            r.add(Method::Get, "/{a}/{a}", 0),
            Err(RouteError::DuplicateParameter { .. })
        ));
        r.add(Method::Get, "/{a}/x", 0).expect("first");
        assert!(matches!(
            r.add(Method::Get, "/{b}/x", 1),
            Err(RouteError::Duplicate { .. })
        ));
        r.add(Method::Post, "/{b}/x", 1).expect("another method");
        assert_eq!(r.routes().count(), 2);
    }
}
