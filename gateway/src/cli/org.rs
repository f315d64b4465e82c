//! `portcullis admin org create|list|show|rename|move`: the organization tree, through
//! `portcullis_operations::orgs` as the operator. `org list` prints the tree indented by depth
//! (with `--json`, a flat list in which each organization names its parent and its path from the
//! root). Renaming or moving an organization rewrites nothing that refers to it: users, devices,
//! roles and templates hold its id.

use super::args::parse_org;
use super::events::AdminEvent;
use super::render::{self, failure, format_ms, printable, write_table};
use portcullis_operations::{Principal, StoreAccess, orgs};
use portcullis_protocol::authz::{MAX_ORG_DEPTH, OrgId};
use portcullis_protocol::store::OrgRecord;
use serde::Serialize;
use std::io::Write;

#[derive(Debug, clap::Subcommand)]
pub enum OrgCommand {
    /// Create an organization below another one (at most 8 levels deep, the root counting as 1).
    Create {
        /// Id of the organization to create it below (1 is the root; see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        parent: OrgId,
        /// Display name of the new organization.
        #[arg(long)]
        name: String,
    },
    /// Show the organization tree, each organization indented below its parent.
    List {
        /// Show only this organization and what is below it [default: 1, the root: everything].
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        under: Option<OrgId>,
    },
    /// Show one organization: name, parent, path from the root, creation time.
    Show {
        /// Organization id (see `org list`).
        #[arg(value_parser = parse_org)]
        id: OrgId,
    },
    /// Give an organization a new name.
    Rename {
        /// Organization id (see `org list`).
        #[arg(value_parser = parse_org)]
        id: OrgId,
        /// The new name.
        #[arg(long)]
        name: String,
    },
    /// Move an organization, with everything below it, under another parent. Never below
    /// itself, never past the depth limit; its users, devices and templates go with it.
    Move {
        /// Organization id (see `org list`).
        #[arg(value_parser = parse_org)]
        id: OrgId,
        /// Id of the new parent.
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        parent: OrgId,
    },
}

/// Runs an org command as the operator.
pub fn execute(
    store: &mut impl StoreAccess,
    command: OrgCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let operator = &Principal::Operator;
    match command {
        OrgCommand::Create { parent, name } => {
            let org = orgs::create(store, operator, parent, name).map_err(failure)?;
            AdminEvent::new(
                "admin_org_created",
                org.id.to_string(),
                format!("created below {parent}, name {:?}", org.name),
            )
            .record();
            report(&org, "Created", json, out)
        }
        OrgCommand::List { under } => {
            let root = under.unwrap_or(OrgId::ROOT);
            let orgs = orgs::list(store, operator, root).map_err(failure)?;
            list(orgs, json, out)
        }
        OrgCommand::Show { id } => {
            let org = orgs::get(store, operator, id).map_err(failure)?;
            show(&org, json, out)
        }
        OrgCommand::Rename { id, name } => {
            let org = orgs::update(store, operator, id, Some(name), None).map_err(failure)?;
            AdminEvent::new(
                "admin_org_renamed",
                id.to_string(),
                format!("renamed to {:?}", org.name),
            )
            .record();
            report(&org, "Renamed", json, out)
        }
        OrgCommand::Move { id, parent } => {
            let org = orgs::update(store, operator, id, None, Some(parent)).map_err(failure)?;
            AdminEvent::new(
                "admin_org_moved",
                id.to_string(),
                format!("moved below {parent}"),
            )
            .record();
            report(&org, "Moved", json, out)
        }
    }
}

/// An organization as the admin CLI shows it.
#[derive(Serialize)]
struct OrgView<'a> {
    id: u32,
    /// `null` for the root.
    parent: Option<u32>,
    name: &'a str,
    /// Ids from the root down to this organization.
    path: Vec<u32>,
    created_ms: u64,
}

impl<'a> From<&'a OrgRecord> for OrgView<'a> {
    fn from(org: &'a OrgRecord) -> Self {
        Self {
            id: org.id.0,
            parent: org.parent.map(|p| p.0),
            name: &org.name,
            path: org.path.ids().iter().map(|id| id.0).collect(),
            created_ms: org.created_ms,
        }
    }
}

/// A path as `1/3/5`.
fn path_text(org: &OrgRecord) -> String {
    let ids: Vec<String> = org.path.ids().iter().map(|id| id.0.to_string()).collect();
    ids.join("/")
}

fn report(org: &OrgRecord, verb: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        return render::json(out, &OrgView::from(org));
    }
    let parent = org
        .parent
        .map_or_else(|| "none (the root)".to_owned(), |p| p.0.to_string());
    writeln!(
        out,
        "{verb} org {} {:?} (parent {parent}, path {}).",
        org.id.0,
        printable(&org.name),
        path_text(org)
    )?;
    Ok(())
}

fn show(org: &OrgRecord, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        return render::json(out, &OrgView::from(org));
    }
    render::write_fields(
        out,
        &[
            ("id", org.id.0.to_string()),
            ("name", printable(&org.name)),
            (
                "parent",
                org.parent
                    .map_or_else(|| "none (the root)".to_owned(), |p| p.0.to_string()),
            ),
            (
                "path",
                format!(
                    "{} (depth {} of at most {MAX_ORG_DEPTH})",
                    path_text(org),
                    org.path.depth()
                ),
            ),
            ("created", format_ms(org.created_ms)),
        ],
    )?;
    Ok(())
}

/// The tree, parents before their children and siblings by id: ordering by path does both,
/// since a parent's path is the start of each child's.
fn list(mut orgs: Vec<OrgRecord>, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    orgs.sort_by(|a, b| a.path.ids().cmp(b.path.ids()));
    if json {
        let views: Vec<OrgView<'_>> = orgs.iter().map(OrgView::from).collect();
        return render::json(out, &views);
    }
    let top = orgs.iter().map(|o| o.path.depth()).min().unwrap_or(1);
    let rows: Vec<[String; 3]> = orgs
        .iter()
        .map(|org| {
            let indent = "  ".repeat(org.path.depth().saturating_sub(top));
            [
                format!("{indent}{}", printable(&org.name)),
                org.id.0.to_string(),
                format_ms(org.created_ms),
            ]
        })
        .collect();
    write_table(out, ["NAME", "ID", "CREATED"], &rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_store::{self, requests};
    use portcullis_protocol::authz::OrgPath;
    use portcullis_protocol::store::{Request, Response, StoreError};

    fn record(path: &[u32], name: &str) -> OrgRecord {
        let ids: Vec<OrgId> = path.iter().map(|id| OrgId(*id)).collect();
        OrgRecord {
            id: ids[ids.len() - 1],
            parent: (ids.len() > 1).then(|| ids[ids.len() - 2]),
            name: name.into(),
            path: OrgPath::new(ids).expect("a path"),
            created_ms: 1_700_000_000_000,
        }
    }

    /// A store with the tree 1 Root › {2 Acme › 4 Acme EU, 3 Beta}, answering lists out of
    /// order (as a store may) and refusing unknown ids.
    fn tree(request: &Request) -> Result<Response, StoreError> {
        let all = [
            record(&[1, 3], "Beta"),
            record(&[1, 2, 4], "Acme EU"),
            record(&[1], "Root"),
            record(&[1, 2], "Acme"),
        ];
        let find = |id: OrgId| {
            all.iter()
                .find(|o| o.id == id)
                .cloned()
                .ok_or_else(|| StoreError::NotFound(format!("{id}")))
        };
        match request {
            Request::ListOrgs { org } => {
                find(*org)?;
                Ok(Response::Orgs(
                    all.iter()
                        .filter(|o| o.path.ids().contains(org))
                        .cloned()
                        .collect(),
                ))
            }
            Request::GetOrg { org } => find(*org).map(Response::Org),
            Request::CreateOrg { parent, name } => {
                let parent = find(*parent)?;
                let mut path: Vec<u32> = parent.path.ids().iter().map(|i| i.0).collect();
                path.push(5);
                Ok(Response::Org(record(&path, name)))
            }
            Request::UpdateOrg { org, name, parent } => {
                let mut found = find(*org)?;
                if let Some(name) = name {
                    found.name.clone_from(name);
                }
                if let Some(parent) = parent {
                    let mut path: Vec<u32> =
                        find(*parent)?.path.ids().iter().map(|i| i.0).collect();
                    path.push(org.0);
                    found = record(&path, &found.name);
                }
                Ok(Response::Org(found))
            }
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        }
    }

    fn run(
        client: &mut portcullis_store_client::StoreClient,
        command: OrgCommand,
        json: bool,
    ) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        execute(client, command, json, &mut out)?;
        Ok(out)
    }

    #[test]
    fn list_prints_the_tree_indented_and_json_flat_with_paths() {
        let (_dir, mut client, seen) = test_store::store(tree);
        let text = test_store::text(
            run(&mut client, OrgCommand::List { under: None }, false).expect("lists"),
        );
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.starts_with("NAME"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("Root "), "{text}");
        assert!(lines[2].starts_with("  Acme "), "{text}");
        assert!(lines[3].starts_with("    Acme EU "), "{text}");
        assert!(lines[4].starts_with("  Beta "), "{text}");

        let under = OrgCommand::List {
            under: Some(OrgId(2)),
        };
        let listed = test_store::json(run(&mut client, under, true).expect("lists"));
        assert_eq!(
            listed,
            serde_json::json!([
                {"id": 2, "parent": 1, "name": "Acme", "path": [1, 2], "created_ms": 1_700_000_000_000u64},
                {"id": 4, "parent": 2, "name": "Acme EU", "path": [1, 2, 4], "created_ms": 1_700_000_000_000u64},
            ])
        );
        assert_eq!(
            requests(&seen),
            [
                Request::ListOrgs { org: OrgId::ROOT },
                Request::ListOrgs { org: OrgId(2) }
            ]
        );
    }

    #[test]
    fn create_rename_and_move_send_one_request_each() {
        let (_dir, mut client, seen) = test_store::store(tree);
        let create = OrgCommand::Create {
            parent: OrgId(2),
            name: "Acme US".into(),
        };
        let created = test_store::json(run(&mut client, create, true).expect("creates"));
        assert_eq!(created["id"], 5);
        assert_eq!(created["path"], serde_json::json!([1, 2, 5]));
        let rename = OrgCommand::Rename {
            id: OrgId(3),
            name: "Gamma\x1b".into(),
        };
        let text = test_store::text(run(&mut client, rename, false).expect("renames"));
        assert_eq!(
            text,
            "Renamed org 3 \"Gamma\u{fffd}\" (parent 1, path 1/3).\n"
        );
        let moved = OrgCommand::Move {
            id: OrgId(3),
            parent: OrgId(2),
        };
        let text = test_store::text(run(&mut client, moved, false).expect("moves"));
        assert!(text.contains("path 1/2/3"), "{text}");
        assert_eq!(
            requests(&seen),
            [
                Request::CreateOrg {
                    parent: OrgId(2),
                    name: "Acme US".into()
                },
                Request::UpdateOrg {
                    org: OrgId(3),
                    name: Some("Gamma\x1b".into()),
                    parent: None
                },
                Request::UpdateOrg {
                    org: OrgId(3),
                    name: None,
                    parent: Some(OrgId(2))
                },
            ]
        );
    }

    #[test]
    fn show_prints_the_path_and_unknown_ids_point_to_the_list() {
        let (_dir, mut client, _) = test_store::store(tree);
        let text = test_store::text(
            run(&mut client, OrgCommand::Show { id: OrgId(4) }, false).expect("shows"),
        );
        assert!(
            text.contains("parent:  2") && text.contains("1/2/4 (depth 3"),
            "{text}"
        );
        let root = test_store::json(
            run(&mut client, OrgCommand::Show { id: OrgId(1) }, true).expect("shows"),
        );
        assert_eq!(root["parent"], serde_json::Value::Null);
        let err = run(&mut client, OrgCommand::Show { id: OrgId(9) }, false).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "org 9 does not exist (see `portcullis admin org list`)"
        );
    }
}
