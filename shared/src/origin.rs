//! Where an EventBridge event says it comes from, checked against where the
//! function runs: an event forwarded from another account or region (a
//! cross-account bus, a replayed archive, a hand-made test event) must change
//! nothing here.

use serde_json::Value;

use crate::Error;

/// The `account` and `region` of an EventBridge envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub account: String,
    pub region: String,
}

impl Origin {
    /// The origin an EventBridge event names; `None` for a manual payload
    /// (no `source` / `detail-type`) or an envelope without both fields.
    pub fn of(payload: &Value) -> Option<Origin> {
        let object = payload.as_object()?;
        if !(object.contains_key("source") || object.contains_key("detail-type")) {
            return None;
        }
        let field = |name: &str| object.get(name).and_then(Value::as_str).map(String::from);
        Some(Origin { account: field("account")?, region: field("region")? })
    }

    /// The event must be for the region the function runs in.
    pub fn check_region(&self, here: &str) -> Result<(), Error> {
        if self.region == here {
            return Ok(());
        }
        Err(Error::UnexpectedEvent(format!(
            "the event is from region {:?}; this function acts in {here} only",
            self.region
        )))
    }

    /// The event must be for the account that owns what it acts on: `owner`
    /// is an account ID read from our own account (a registry ID, the account
    /// of an ARN an API call returned), `what` names that thing.
    pub fn check_account(&self, owner: &str, what: &str) -> Result<(), Error> {
        if self.account == owner {
            return Ok(());
        }
        Err(Error::UnexpectedEvent(format!(
            "the event is from account {:?}, but {what} belongs to account {owner}",
            self.account
        )))
    }
}

/// The account field of an ARN (`arn:partition:service:region:account:...`).
pub fn account_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    (parts.next()? == "arn").then_some(())?;
    parts.nth(3).filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_envelope_and_ignores_manual_payloads() {
        let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "account": "123456789012", "region": "us-east-1"});
        let origin = Origin::of(&event).expect("an origin");
        assert_eq!(origin, Origin { account: "123456789012".into(), region: "us-east-1".into() });
        assert_eq!(Origin::of(&json!({"dryRun": true})), None);
        assert_eq!(Origin::of(&json!({"source": "aws.events"})), None, "no account or region: parsing says so");
    }

    #[test]
    fn another_region_or_account_is_refused_by_name() {
        let origin = Origin { account: "210987654321".into(), region: "eu-west-1".into() };
        let err = origin.check_region("us-east-1").unwrap_err().to_string();
        assert!(err.contains("\"eu-west-1\"") && err.contains("us-east-1 only"), "{err}");
        let err = origin.check_account("123456789012", "repository users").unwrap_err().to_string();
        assert!(
            err.contains("account \"210987654321\", but repository users belongs to account 123456789012"),
            "{err}"
        );
        assert!(origin.check_region("eu-west-1").is_ok());
        assert!(origin.check_account("210987654321", "x").is_ok());
    }

    #[test]
    fn account_of_an_arn() {
        assert_eq!(account_of_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/users:3"), Some("123456789012"));
        assert_eq!(account_of_arn("arn:aws:ecr:us-east-1:123456789012:repository/a/b:c"), Some("123456789012"));
        assert_eq!(account_of_arn("users:3"), None);
        assert_eq!(account_of_arn("arn:aws:s3:::bucket"), None);
    }
}
