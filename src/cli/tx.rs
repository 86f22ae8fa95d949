//! `concord tx …`: list, show, and the operator actions (retry, rollback,
//! resolve, pause, resume; retry or skip one branch).

use chrono::Utc;
use concord_proto::v1 as pb;

use super::args::{BranchCommand, BulkAction, BulkArgs, ListArgs, Output, TxArgs, TxCommand};
use super::model::{ActionResult, BulkView, TxDetail, TxList, TxSummary};
use super::{Client, EXIT_USAGE, Failure, confirm, connect, emit, render};
use crate::api::convert::timestamp;

/// Runs one `tx` subcommand; rollback and resolve ask first on a
/// terminal.
pub(super) async fn run(args: TxArgs) -> Result<(), Failure> {
    let output = args.connection.output;
    let mut client = connect(&args.connection).await?;
    match args.command {
        TxCommand::List(l) => list(&mut client, l, output).await,
        TxCommand::Show { gid } => show(&mut client, gid, output).await,
        TxCommand::Retry { gid, note } => {
            let reply = client
                .retry_transaction(pb::RetryTransactionRequest {
                    gid: gid.clone(),
                    note: note.unwrap_or_default(),
                })
                .await?;
            acted(output, gid, "retry", reply.into_inner())
        }
        TxCommand::Rollback { gid, reason, yes } => {
            confirm(
                &format!("roll back transaction {gid}? every branch will be cancelled."),
                yes,
            )?;
            let reply = client
                .rollback_transaction(pb::RollbackTransactionRequest {
                    gid: gid.clone(),
                    reason,
                })
                .await?;
            acted(output, gid, "rollback", reply.into_inner())
        }
        TxCommand::Resolve { gid, note, yes } => {
            confirm(
                &format!(
                    "resolve transaction {gid} by hand? it will never be retried again; \
                     make sure every participant is consistent."
                ),
                yes,
            )?;
            let reply = client
                .resolve_transaction(pb::ResolveTransactionRequest {
                    gid: gid.clone(),
                    note,
                })
                .await?;
            acted(output, gid, "resolve", reply.into_inner())
        }
        TxCommand::Pause { gid, note } => {
            let reply = client
                .pause_transaction(pb::PauseTransactionRequest {
                    gid: gid.clone(),
                    note: note.unwrap_or_default(),
                })
                .await?;
            acted(output, gid, "pause", reply.into_inner())
        }
        TxCommand::Resume { gid, note } => {
            let reply = client
                .resume_transaction(pb::ResumeTransactionRequest {
                    gid: gid.clone(),
                    note: note.unwrap_or_default(),
                })
                .await?;
            acted(output, gid, "resume", reply.into_inner())
        }
        TxCommand::Branch(BranchCommand::Retry { gid, branch, note }) => {
            let reply = client
                .retry_branch(pb::RetryBranchRequest {
                    gid: gid.clone(),
                    branch_id: branch,
                    note: note.unwrap_or_default(),
                })
                .await?;
            acted(output, gid, "retry_branch", reply.into_inner())
        }
        TxCommand::Branch(BranchCommand::Skip {
            gid,
            branch,
            note,
            yes,
        }) => {
            confirm(
                &format!(
                    "skip branch {branch} of transaction {gid}? its call will never be made; \
                     make sure its work was done by hand."
                ),
                yes,
            )?;
            let reply = client
                .skip_branch(pb::SkipBranchRequest {
                    gid: gid.clone(),
                    branch_id: branch,
                    note,
                })
                .await?;
            acted(output, gid, "skip_branch", reply.into_inner())
        }
        TxCommand::Bulk(b) => bulk(&mut client, b, output).await,
    }
}

/// `tx bulk`: a dry run names what would change; unless only that was
/// asked, a confirmation, then the command on exactly those transactions.
/// Exit code 1 when any was refused or failed.
async fn bulk(client: &mut Client, b: BulkArgs, output: Output) -> Result<(), Failure> {
    let (action, name) = match b.action {
        BulkAction::Retry => (pb::BulkAction::Retry, "retry"),
        BulkAction::Pause => (pb::BulkAction::Pause, "pause"),
        BulkAction::Resume => (pb::BulkAction::Resume, "resume"),
        BulkAction::Resolve => (pb::BulkAction::Resolve, "resolve"),
    };
    let filter = pb::ListTransactionsRequest {
        statuses: status_filter(&b.status)?,
        mode: mode_filter(&b.mode)?,
        participant: b.participant.unwrap_or_default(),
        created_before: b.created_before.map(timestamp),
        needs_attention: b.needs_attention,
        stuck_for: b.stuck.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        gid_prefix: b.gid_prefix.unwrap_or_default(),
        ..Default::default()
    };
    let request = |dry_run: bool, gids: Vec<String>| pb::BulkActRequest {
        action: action as i32,
        filter: Some(filter.clone()),
        note: b.note.clone().unwrap_or_default(),
        dry_run,
        gids,
        limit: b.limit.unwrap_or(0),
    };
    let dry = client
        .bulk_act(request(true, Vec::new()))
        .await?
        .into_inner();
    let dry_view = BulkView::from_wire(name, true, &dry);
    let would: Vec<String> = dry_view
        .results
        .iter()
        .filter(|r| r.outcome == "would_change")
        .map(|r| r.gid.clone())
        .collect();
    if b.dry_run || would.is_empty() {
        emit(output, &dry_view, |p| render::bulk(&dry_view, p));
        if output == Output::Text && dry_view.truncated {
            eprintln!("more transactions match than the limit; run again for the rest");
        }
        return Ok(());
    }
    if output == Output::Text && !b.yes {
        eprint!("{}", render::bulk(&dry_view, render::Paint(false)));
    }
    confirm(
        &format!("{name} these {} transactions?", would.len()),
        b.yes,
    )?;
    let done = client.bulk_act(request(false, would)).await?.into_inner();
    let view = BulkView::from_wire(name, false, &done);
    emit(output, &view, |p| render::bulk(&view, p));
    if view.count("refused") + view.count("failed") > 0 {
        return Err(Failure::error(format!(
            "{} of {} transactions were refused or failed",
            view.count("refused") + view.count("failed"),
            view.results.len()
        )));
    }
    Ok(())
}

/// `tx list`: one page; the cursor of the next goes to stderr.
async fn list(client: &mut Client, l: ListArgs, output: Output) -> Result<(), Failure> {
    let request = pb::ListTransactionsRequest {
        statuses: status_filter(&l.status)?,
        mode: mode_filter(&l.mode)?,
        participant: l.participant.unwrap_or_default(),
        created_before: l.created_before.map(timestamp),
        created_after: l.created_after.map(timestamp),
        updated_before: l.updated_before.map(timestamp),
        needs_attention: l.needs_attention,
        stuck_for: l.stuck.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        gid_prefix: l.gid_prefix.unwrap_or_default(),
        page_size: l.limit.unwrap_or(0),
        cursor: l.cursor.unwrap_or_default(),
        oldest_first: l.oldest_first,
    };
    let reply = client.list_transactions(request).await?.into_inner();
    let view = TxList {
        transactions: reply
            .transactions
            .iter()
            .map(TxSummary::from_wire)
            .collect(),
        next_cursor: (!reply.next_cursor.is_empty()).then_some(reply.next_cursor),
    };
    let now = Utc::now();
    if output == Output::Text && view.transactions.is_empty() {
        eprintln!("no transaction matches");
        return Ok(());
    }
    emit(output, &view, |p| {
        render::tx_list(&view.transactions, now, p)
    });
    if output == Output::Text
        && let Some(c) = &view.next_cursor
    {
        eprintln!("more: add --cursor {c}");
    }
    Ok(())
}

/// `tx show`.
async fn show(client: &mut Client, gid: String, output: Output) -> Result<(), Failure> {
    let reply = client
        .get_transaction_detail(pb::GetTransactionDetailRequest { gid })
        .await?
        .into_inner();
    let now = Utc::now();
    let view = TxDetail::from_wire(&reply, now);
    emit(output, &view, |p| render::tx_detail(&view, now, p));
    Ok(())
}

/// Prints what an operator action did.
fn acted(
    output: Output,
    gid: String,
    action: &str,
    reply: pb::OperatorActionResponse,
) -> Result<(), Failure> {
    let view = ActionResult {
        gid,
        action: action.into(),
        changed: reply.changed,
        message: reply.message,
        transaction: reply.transaction.as_ref().map(TxSummary::from_wire),
    };
    emit(output, &view, |p| render::action(&view, p));
    Ok(())
}

fn status_filter(raw: &[String]) -> Result<Vec<i32>, Failure> {
    raw.iter()
        .map(|s| {
            let wire = format!("TRANSACTION_STATUS_{}", s.trim().to_ascii_uppercase());
            pb::TransactionStatus::from_str_name(&wire)
                .filter(|s| *s != pb::TransactionStatus::Unspecified)
                .map(|s| s as i32)
                .ok_or_else(|| Failure {
                    code: EXIT_USAGE,
                    message: format!("unknown status {s:?}"),
                })
        })
        .collect()
}

fn mode_filter(raw: &Option<String>) -> Result<i32, Failure> {
    Ok(match raw.as_deref() {
        None => pb::TransactionMode::Unspecified as i32,
        Some("tcc") => pb::TransactionMode::Tcc as i32,
        Some("saga") => pb::TransactionMode::Saga as i32,
        Some("msg") => pb::TransactionMode::Msg as i32,
        Some(other) => {
            return Err(Failure {
                code: EXIT_USAGE,
                message: format!("unknown mode {other:?} (tcc, saga or msg)"),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_map_to_the_wire() {
        assert_eq!(
            status_filter(&["confirming".into(), "Cancelled".into()]).unwrap(),
            vec![
                pb::TransactionStatus::Confirming as i32,
                pb::TransactionStatus::Cancelled as i32
            ]
        );
        assert_eq!(
            status_filter(&["done".into()]).unwrap_err().code,
            EXIT_USAGE
        );
        assert_eq!(
            status_filter(&["unspecified".into()]).unwrap_err().code,
            EXIT_USAGE
        );
    }
}
