//! The REST routing table, compiled at start-up from the `google.api.http`
//! bindings of every public method: path templates with variables, custom
//! verbs after the last `:`, a literal segment beating a variable, and the
//! methods a path allows (for 405 and `Allow`).

use std::{cmp::Ordering, sync::Arc};

use safra::{contract::HttpBinding, contract::gate::MethodPolicy};

/// A template that cannot be compiled (the contract lint should have caught
/// it; the gateway refuses to start rather than route it wrongly).
#[derive(Debug, thiserror::Error)]
#[error("{method}: path template '{template}': {problem}")]
pub struct TemplateError {
    method: String,
    template: String,
    problem: String,
}

/// One segment of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*` or a plain `{variable}`: exactly one segment.
    One,
    /// `**`: the rest of the path (one or more segments).
    Rest,
}

impl Segment {
    /// Literals sort before variables, variables before the rest.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::One => 1,
            Segment::Rest => 2,
        }
    }
}

/// A variable: the request field it fills and the segments it spans.
#[derive(Debug, Clone)]
struct Variable {
    field_path: String,
    start: usize,
    /// Exclusive; `None` when it ends with a `**`.
    end: Option<usize>,
}

/// A compiled path template.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

impl Template {
    /// Compiles `/v1/things/{thing_id}:verb`-style templates.
    fn parse(template: &str) -> Result<Self, String> {
        let path = template.strip_prefix('/').ok_or("must start with '/'")?;
        // The verb follows the last ':' that is outside braces.
        let (path, verb) = match path.rfind(':') {
            Some(colon) if !path[colon..].contains('}') => {
                (&path[..colon], Some(path[colon + 1..].to_owned()))
            }
            _ => (path, None),
        };
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner.find('}').ok_or("an unclosed '{'")?;
                let (field_path, pattern) = inner[..close]
                    .split_once('=')
                    .unwrap_or((&inner[..close], "*"));
                let start = segments.len();
                let mut deep = false;
                for part in pattern.split('/') {
                    segments.push(match part {
                        "*" => Segment::One,
                        "**" => {
                            deep = true;
                            Segment::Rest
                        }
                        literal => Segment::Literal(literal.to_owned()),
                    });
                }
                variables.push(Variable {
                    field_path: field_path.to_owned(),
                    start,
                    end: (!deep).then_some(segments.len()),
                });
                rest = inner[close + 1..].trim_start_matches('/');
            } else {
                let (part, after) = rest.split_once('/').unwrap_or((rest, ""));
                segments.push(match part {
                    "*" => Segment::One,
                    "**" => Segment::Rest,
                    literal => Segment::Literal(literal.to_owned()),
                });
                rest = after;
            }
        }
        if segments
            .iter()
            .rev()
            .skip(1)
            .any(|segment| *segment == Segment::Rest)
        {
            return Err("'**' may only end the template".into());
        }
        Ok(Self {
            segments,
            variables,
            verb,
        })
    }

    /// The variables' values when `segments` and `verb` match, decoded.
    fn matches(&self, segments: &[&str], verb: Option<&str>) -> Option<Vec<(String, String)>> {
        if self.verb.as_deref() != verb {
            return None;
        }
        let deep = self.segments.last() == Some(&Segment::Rest);
        if deep {
            if segments.len() < self.segments.len() {
                return None;
            }
        } else if segments.len() != self.segments.len() {
            return None;
        }
        for (index, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) if segments[index] != literal => return None,
                Segment::One if segments[index].is_empty() => return None,
                _ => {}
            }
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let spanned = &segments[variable.start..variable.end.unwrap_or(segments.len())];
            let value = if spanned.len() == 1 {
                // One segment: every escape is decoded, '/' included.
                decode(spanned[0])?
            } else {
                // Several: '/' keeps separating them.
                spanned
                    .iter()
                    .map(|part| decode(part))
                    .collect::<Option<Vec<_>>>()?
                    .join("/")
            };
            values.push((variable.field_path.clone(), value));
        }
        Some(values)
    }

    /// Orders templates so that the first match is the most specific.
    fn specificity(&self, other: &Self) -> Ordering {
        for (mine, theirs) in self.segments.iter().zip(&other.segments) {
            let order = mine.rank().cmp(&theirs.rank());
            if order != Ordering::Equal {
                return order;
            }
        }
        other.segments.len().cmp(&self.segments.len())
    }
}

fn decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// One REST route: a binding of a method.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method (upper case).
    pub http_method: http::Method,
    /// The binding as the contract declares it.
    pub binding: HttpBinding,
    /// The method and its policy.
    pub policy: Arc<MethodPolicy>,
    /// `/<package>.<Service>/<Method>`.
    pub grpc_path: String,
    template: Template,
}

/// The outcome of routing a request.
#[derive(Debug)]
pub enum Routed<'a> {
    /// A route, with the path variables' values.
    Found(&'a Route, Vec<(String, String)>),
    /// The path exists for other methods only.
    WrongMethod(Vec<http::Method>),
    /// No template matches the path.
    NotFound,
}

/// Every REST route, most specific first.
#[derive(Debug, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// Compiles the bindings of `policies` (internal methods have none and
    /// are never routed).
    ///
    /// # Errors
    /// A template or verb that does not compile.
    pub fn new<'a>(
        policies: impl Iterator<Item = (&'a str, &'a Arc<MethodPolicy>)>,
    ) -> Result<Self, TemplateError> {
        let mut routes = Vec::new();
        for (grpc_path, policy) in policies {
            if policy.is_internal() {
                continue;
            }
            for binding in safra::contract::http_bindings(&policy.method) {
                let problem = |problem: String| TemplateError {
                    method: grpc_path.to_owned(),
                    template: binding.path.clone(),
                    problem,
                };
                let template = Template::parse(&binding.path).map_err(problem)?;
                let http_method = http::Method::from_bytes(binding.method.as_bytes())
                    .map_err(|_| problem(format!("'{}' is not an HTTP method", binding.method)))?;
                routes.push(Route {
                    http_method,
                    binding,
                    policy: policy.clone(),
                    grpc_path: grpc_path.to_owned(),
                    template,
                });
            }
        }
        routes.sort_by(|a, b| {
            a.template
                .specificity(&b.template)
                .then_with(|| a.binding.path.cmp(&b.binding.path))
                .then_with(|| a.http_method.as_str().cmp(b.http_method.as_str()))
        });
        Ok(Self { routes })
    }

    /// Every route, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Routes `method` and `path` (percent-encoded, without the query).
    #[must_use]
    pub fn find(&self, method: &http::Method, path: &str) -> Routed<'_> {
        let Some(path) = path.strip_prefix('/') else {
            return Routed::NotFound;
        };
        let mut segments: Vec<&str> = path.split('/').collect();
        // A custom verb splits at the last ':' of the last segment.
        let mut verb = None;
        if let Some(last) = segments.last_mut()
            && let Some((before, after)) = last.rsplit_once(':')
        {
            *last = before;
            verb = Some(after);
        }
        let mut allowed = Vec::new();
        for route in &self.routes {
            // HEAD is answered like GET, without the body.
            let same_method = route.http_method == method
                || (method == http::Method::HEAD && route.http_method == http::Method::GET);
            if let Some(values) = route.template.matches(&segments, verb) {
                if same_method {
                    return Routed::Found(route, values);
                }
                if !allowed.contains(&route.http_method) {
                    allowed.push(route.http_method.clone());
                }
            }
        }
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        if allowed.is_empty() {
            Routed::NotFound
        } else {
            Routed::WrongMethod(allowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Template {
        Template::parse(text).expect("compiles")
    }

    fn split(path: &str) -> Vec<&str> {
        path.trim_start_matches('/').split('/').collect()
    }

    #[test]
    fn variables_literals_verbs_and_deep_wildcards_match() {
        let plain = template("/v1/users/{user_id}");
        assert_eq!(
            plain.matches(&split("/v1/users/a%2Fb"), None),
            Some(vec![("user_id".into(), "a/b".into())])
        );
        assert_eq!(plain.matches(&split("/v1/users/"), None), None);
        assert_eq!(plain.matches(&split("/v1/users/a/b"), None), None);

        let verb = template("/v1/offerings/{offering_id}:invest");
        assert_eq!(verb.verb.as_deref(), Some("invest"));
        assert_eq!(
            verb.matches(&split("/v1/offerings/o-1"), Some("invest")),
            Some(vec![("offering_id".into(), "o-1".into())])
        );
        assert_eq!(verb.matches(&split("/v1/offerings/o-1"), None), None);

        let nested = template("/v1/{parent.name=shelves/*}/books/{book}");
        assert_eq!(
            nested.matches(&split("/v1/shelves/s1/books/b2"), None),
            Some(vec![
                ("parent.name".into(), "shelves/s1".into()),
                ("book".into(), "b2".into())
            ])
        );

        let deep = template("/v1/files/{path=**}");
        assert_eq!(
            deep.matches(&split("/v1/files/a/b/c"), None),
            Some(vec![("path".into(), "a/b/c".into())])
        );
        assert!(Template::parse("/v1/{x=**}/tail").is_err());
        assert!(Template::parse("v1/x").is_err());
    }

    #[test]
    fn every_rest_path_of_the_design_routes_to_its_rpc() {
        let pool = safra::contract::descriptor::pool().expect("contracts");
        let verifier = std::sync::Arc::new(safra::identity::auth::TokenVerifier::new(
            "test",
            std::sync::Arc::new(safra::identity::auth::StaticKeys(std::sync::Arc::default())),
        ));
        let gate = safra::contract::gate::Gate::new(&pool, verifier).expect("gate");
        let routes = Routes::new(gate.policies()).expect("routes");
        let table = [
            ("POST", "/v1/accounts:register", "AccountsService/Register"),
            ("POST", "/v1/accounts:login", "AccountsService/Login"),
            ("POST", "/v1/accounts:refresh", "AccountsService/Refresh"),
            ("POST", "/v1/accounts:logout", "AccountsService/Logout"),
            ("GET", "/v1/users/me", "AccountsService/GetMe"),
            ("GET", "/v1/users/u-1", "AccountsService/GetUser"),
            ("GET", "/v1/users", "AccountsService/ListUsers"),
            ("GET", "/.well-known/jwks.json", "AccountsService/GetJwks"),
            ("POST", "/v1/offerings", "MarketplaceService/CreateOffering"),
            ("GET", "/v1/offerings/o-1", "MarketplaceService/GetOffering"),
            ("GET", "/v1/offerings", "MarketplaceService/ListOfferings"),
            (
                "POST",
                "/v1/offerings/o-1:invest",
                "MarketplaceService/Invest",
            ),
            (
                "GET",
                "/v1/investments",
                "MarketplaceService/ListInvestments",
            ),
            ("GET", "/v1/wallet", "WalletService/GetWallet"),
            ("POST", "/v1/wallet:deposit", "WalletService/Deposit"),
            (
                "GET",
                "/v1/wallet/transactions",
                "WalletService/ListTransactions",
            ),
            (
                "POST",
                "/v1/offerings/o-1/installments/2:pay",
                "WalletService/PayInstallment",
            ),
            (
                "GET",
                "/v1/distributions/d-1",
                "DistributionService/GetDistribution",
            ),
            (
                "GET",
                "/v1/distributions",
                "DistributionService/ListDistributions",
            ),
            (
                "GET",
                "/v1/notifications",
                "NotificationsService/ListNotifications",
            ),
            (
                "POST",
                "/v1/notifications/n-1:markRead",
                "NotificationsService/MarkRead",
            ),
            (
                "GET",
                "/v1/notifications:stream",
                "NotificationsService/StreamNotifications",
            ),
        ];
        for (method, path, rpc) in table {
            let method = http::Method::from_bytes(method.as_bytes()).expect("method");
            match routes.find(&method, path) {
                Routed::Found(route, _) => {
                    assert!(
                        route.grpc_path.ends_with(rpc),
                        "{path}: {}",
                        route.grpc_path
                    );
                }
                other => panic!("{method} {path}: {other:?}"),
            }
        }
        // Internal RPCs have no route.
        assert!(
            routes.iter().all(|route| !route.policy.is_internal()),
            "internal methods are never routed"
        );
    }

    #[test]
    fn a_literal_segment_sorts_before_a_variable() {
        let literal = template("/v1/users/me");
        let variable = template("/v1/users/{user_id}");
        assert_eq!(literal.specificity(&variable), Ordering::Less);
        assert_eq!(variable.specificity(&literal), Ordering::Greater);
    }
}
