//! IAM-style permissions (issue 16, not wired into the service yet): a
//! policy document of statements, each allowing or denying actions on
//! resources, and the one evaluation every operation will go through.
//!
//! The rules are IAM's: a request is allowed only if some statement allows
//! its action on its resource and none denies it (an explicit deny wins;
//! nothing said is a deny). `Action` and `Resource` take one string or a
//! list; `*` matches any run of characters and `?` any one character;
//! actions compare without regard to case, resources exactly. Actions are a
//! table ([`ACTIONS`]): later capabilities add their rows, and a policy
//! that names an action no row matches is refused when it is stored (a
//! typo would otherwise allow nothing, silently).

use serde::{Deserialize, Serialize};

/// Every action a policy can name: `service:Operation`.
pub const ACTIONS: &[&str] = &[
    "lambda:CreateFunction",
    "lambda:GetFunction",
    "lambda:GetFunctionConfiguration",
    "lambda:ListFunctions",
    "lambda:UpdateFunctionCode",
    "lambda:UpdateFunctionConfiguration",
    "lambda:DeleteFunction",
    "lambda:PutFunctionConcurrency",
    "lambda:PublishVersion",
    "lambda:ListVersionsByFunction",
    "lambda:CreateAlias",
    "lambda:GetAlias",
    "lambda:UpdateAlias",
    "lambda:ListAliases",
    "lambda:DeleteAlias",
    "lambda:InvokeFunction",
    "lambda:PutFunctionEventInvokeConfig",
    "lambda:GetFunctionEventInvokeConfig",
    "lambda:DeleteFunctionEventInvokeConfig",
    "lambda:GetAccountSettings",
    "logs:GetLogEvents",
    "floe:ManageEvents",
    "floe:ReadCluster",
    "floe:ManageCluster",
    "floe:ManageKeys",
];

/// A policy document is at most this long (IAM's inline limit is 10,240).
pub const MAX_POLICY_BYTES: usize = 10 * 1024;

/// One string or a list of them, as IAM writes both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(item) => std::slice::from_ref(item),
            OneOrMany::Many(items) => items,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Statement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
    pub action: OneOrMany,
    pub resource: OneOrMany,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub statement: Vec<Statement>,
}

/// What a policy says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A statement denies it.
    ExplicitDeny,
    /// No statement allows it.
    ImplicitDeny,
}

/// `*` and `?` wildcards over `text`; `fold`: ignoring ASCII case.
fn matches(pattern: &str, text: &str, fold: bool) -> bool {
    let same = |p: u8, t: u8| if fold { p.eq_ignore_ascii_case(&t) } else { p == t };
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much of `text` it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || (pattern[p] != b'*' && same(pattern[p], text[t]))) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl Policy {
    /// Parses and checks a policy document (JSON).
    pub fn parse(text: &str) -> Result<Policy, String> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(format!("a policy is at most {MAX_POLICY_BYTES} bytes"));
        }
        let policy: Policy = serde_json::from_str(text).map_err(|e| format!("not a policy document: {e}"))?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(version) = &self.version {
            if version != "2012-10-17" && version != "2008-10-17" {
                return Err(format!("unknown policy Version {version:?}: use \"2012-10-17\""));
            }
        }
        if self.statement.is_empty() {
            return Err("a policy has at least one Statement".into());
        }
        for statement in &self.statement {
            let (actions, resources) = (statement.action.items(), statement.resource.items());
            if actions.is_empty() || resources.is_empty() {
                return Err("each Statement names at least one Action and one Resource".into());
            }
            for action in actions {
                if !ACTIONS.iter().any(|known| matches(action, known, true)) {
                    return Err(format!(
                        "Action {action:?} matches no action floe knows (e.g. lambda:InvokeFunction, lambda:*, \
                         floe:ManageCluster)"
                    ));
                }
            }
            for resource in resources {
                if resource != "*" && !resource.starts_with("arn:") {
                    return Err(format!("Resource {resource:?} is neither \"*\" nor an ARN"));
                }
            }
        }
        Ok(())
    }

    /// Whether this policy allows `action` on `resource` (an ARN, or `*`
    /// for actions on no particular resource).
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        let mut allowed = false;
        for statement in &self.statement {
            let applies = statement
                .action
                .items()
                .iter()
                .any(|pattern| matches(pattern, action, true))
                && statement
                    .resource
                    .items()
                    .iter()
                    .any(|pattern| matches(pattern, resource, false));
            match (applies, statement.effect) {
                (true, Effect::Deny) => return Decision::ExplicitDeny,
                (true, Effect::Allow) => allowed = true,
                (false, _) => {}
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    /// Everything, everywhere: the first key's policy.
    pub fn admin() -> Policy {
        Policy {
            version: Some("2012-10-17".into()),
            statement: vec![Statement {
                sid: None,
                effect: Effect::Allow,
                action: OneOrMany::One("*".into()),
                resource: OneOrMany::One("*".into()),
            }],
        }
    }

    /// Only invoking the functions whose names match `pattern` (any
    /// version or alias of them), in `region` of `account`.
    pub fn invoke_only(region: &str, account: &str, pattern: &str) -> Policy {
        Policy {
            version: Some("2012-10-17".into()),
            statement: vec![Statement {
                sid: None,
                effect: Effect::Allow,
                action: OneOrMany::One("lambda:InvokeFunction".into()),
                resource: OneOrMany::Many(function_arns(region, account, pattern)),
            }],
        }
    }

    /// Deploying and running the functions whose names match `pattern`:
    /// every `lambda:` action on them, and listing functions; nothing of
    /// the cluster or its keys.
    pub fn deploy(region: &str, account: &str, pattern: &str) -> Policy {
        Policy {
            version: Some("2012-10-17".into()),
            statement: vec![
                Statement {
                    sid: None,
                    effect: Effect::Allow,
                    action: OneOrMany::Many(vec![
                        "lambda:*".into(),
                        "logs:GetLogEvents".into(),
                        "floe:ManageEvents".into(),
                    ]),
                    resource: OneOrMany::Many(function_arns(region, account, pattern)),
                },
                Statement {
                    sid: None,
                    effect: Effect::Allow,
                    action: OneOrMany::Many(vec!["lambda:ListFunctions".into(), "lambda:GetAccountSettings".into()]),
                    resource: OneOrMany::One("*".into()),
                },
            ],
        }
    }
}

/// The ARN of a function, and of its versions and aliases, by name pattern.
fn function_arns(region: &str, account: &str, pattern: &str) -> Vec<String> {
    let base = format!("arn:aws:lambda:{region}:{account}:function:{pattern}");
    vec![base.clone(), format!("{base}:*")]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:lambda:local:000000000000:function:";

    #[test]
    fn wildcards_match_as_iams_do() {
        assert!(matches("*", "", false));
        assert!(matches("orders-*", "orders-1", false));
        assert!(matches("orders-*", "orders-", false));
        assert!(!matches("orders-*", "order", false));
        assert!(matches("a*b*c", "aXXbYYc", false));
        assert!(!matches("a*b*c", "aXXbYY", false));
        assert!(matches("a?c", "abc", false));
        assert!(!matches("a?c", "ac", false));
        assert!(matches("lambda:invoke*", "lambda:InvokeFunction", true));
        assert!(!matches("lambda:invoke*", "lambda:InvokeFunction", false));
        assert!(matches("**x", "abx", false));
    }

    #[test]
    fn an_explicit_deny_wins_and_silence_denies() {
        let policy = Policy::parse(&format!(
            r#"{{"Version": "2012-10-17", "Statement": [
                {{"Effect": "Allow", "Action": "lambda:*", "Resource": "{ARN}*"}},
                {{"Effect": "Deny", "Action": ["lambda:DeleteFunction"], "Resource": "{ARN}prod-*"}}
            ]}}"#
        ))
        .unwrap();
        assert_eq!(
            policy.decide("lambda:DeleteFunction", &format!("{ARN}dev-1")),
            Decision::Allow
        );
        assert_eq!(
            policy.decide("lambda:DeleteFunction", &format!("{ARN}prod-1")),
            Decision::ExplicitDeny
        );
        assert_eq!(policy.decide("floe:ManageKeys", "*"), Decision::ImplicitDeny);
    }

    #[test]
    fn shortcuts_allow_what_they_say_and_nothing_more() {
        let invoke = Policy::invoke_only("local", "000000000000", "orders-*");
        assert_eq!(
            invoke.decide("lambda:InvokeFunction", &format!("{ARN}orders-eu")),
            Decision::Allow
        );
        assert_eq!(
            invoke.decide("lambda:InvokeFunction", &format!("{ARN}orders-eu:live")),
            Decision::Allow
        );
        assert_eq!(
            invoke.decide("lambda:InvokeFunction", &format!("{ARN}billing")),
            Decision::ImplicitDeny
        );
        assert_eq!(
            invoke.decide("lambda:UpdateFunctionCode", &format!("{ARN}orders-eu")),
            Decision::ImplicitDeny
        );
        let deploy = Policy::deploy("local", "000000000000", "orders-*");
        assert_eq!(
            deploy.decide("lambda:CreateFunction", &format!("{ARN}orders-new")),
            Decision::Allow
        );
        assert_eq!(deploy.decide("lambda:ListFunctions", "*"), Decision::Allow);
        assert_eq!(deploy.decide("floe:ManageCluster", "*"), Decision::ImplicitDeny);
        assert_eq!(deploy.decide("floe:ManageKeys", "*"), Decision::ImplicitDeny);
        assert_eq!(Policy::admin().decide("floe:ManageKeys", "*"), Decision::Allow);
        // Each shortcut is a valid document, and survives its JSON.
        for policy in [invoke, deploy, Policy::admin()] {
            let text = serde_json::to_string(&policy).unwrap();
            assert_eq!(Policy::parse(&text).unwrap(), policy);
        }
    }

    #[test]
    fn documents_that_cannot_mean_what_they_say_are_refused() {
        for (text, refusal) in [
            ("{}", "not a policy document"),
            (r#"{"Statement": []}"#, "at least one Statement"),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunctoin", "Resource": "*"}]}"#,
                "matches no action",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "orders"}]}"#,
                "neither",
            ),
            (
                r#"{"Statement": [{"Effect": "Maybe", "Action": "lambda:*", "Resource": "*"}]}"#,
                "not a policy document",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}]}"#,
                "not a policy document",
            ),
            (
                r#"{"Version": "2020-01-01", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#,
                "unknown policy Version",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}"#,
                "at least one Action",
            ),
        ] {
            let error = Policy::parse(text).unwrap_err();
            assert!(error.contains(refusal), "{text}: {error}");
        }
        let huge = format!(
            r#"{{"Statement": [{{"Effect": "Allow", "Action": "*", "Resource": "{}"}}]}}"#,
            "a".repeat(MAX_POLICY_BYTES)
        );
        assert!(Policy::parse(&huge).unwrap_err().contains("at most"));
    }
}
