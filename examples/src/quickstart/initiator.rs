//! The quickstart initiator: five TCC orders holding tea (the last asks
//! for more than there is) and two sagas charging alice (the second for
//! more than she has).

use concord_sdk::{BeginOptions, Coordinator, initiator::Result};

use super::participant::Line;

fn line(id: &str, amount: i64) -> Line {
    Line {
        id: id.into(),
        amount,
    }
}

/// Runs the seven transactions, one line of outcome each.
pub async fn run(coordinator: &Coordinator) -> Result<Vec<String>> {
    let mut outcomes = Vec::new();
    for qty in [1, 2, 3, 1, 99] {
        let order = coordinator
            .tcc(BeginOptions::default().wait(true), |tx| async move {
                tx.try_branch_json("shop", "hold", &line("tea", qty)).await
            })
            .await;
        outcomes.push(match order {
            Ok(done) => format!("hold {qty} tea: {:?}", done.status),
            Err(e) if e.is_rejected() => format!("hold {qty} tea: rolled back, {e}"),
            Err(e) => return Err(e),
        });
    }
    for amount in [30, 500] {
        let saga = coordinator
            .saga(None)
            .step_json("shop", "charge", "refund", &line("alice", amount))
            .submit(true)
            .await?;
        let why = saga.reason.map(|r| format!(", {r}")).unwrap_or_default();
        outcomes.push(format!("charge alice {amount}: {:?}{why}", saga.status));
    }
    Ok(outcomes)
}
