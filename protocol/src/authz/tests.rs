//! The permission decision as a matrix: every built-in role against its own organization, a child,
//! a grandchild, its parent, a sibling and a sibling's child, on owned, others' and unowned
//! devices and on organization-wide resources; then properties that hold for any permission set
//! (nothing outside the subtree is ever visible, more permissions never allow less, the two forms
//! of a device permission agree, a grant never exceeds the granter), and the names and paths the
//! records store.

use super::*;
use proptest::prelude::*;

const ME: UserId = UserId(10);
const SOMEONE_ELSE: UserId = UserId(11);

fn path(ids: &[u32]) -> OrgPath {
    OrgPath::new(ids.iter().map(|&id| OrgId(id)).collect()).expect("a valid path")
}

/// The actor's organization is 2, under the root 1; 3 is its sibling.
fn member(permissions: Permissions) -> Actor {
    Actor::Member(Member {
        user: ME,
        org: path(&[1, 2]),
        permissions,
    })
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Same,
    Child,
    Grandchild,
    Parent,
    Sibling,
    SiblingChild,
}

impl Place {
    const ALL: [Place; 6] = [
        Place::Same,
        Place::Child,
        Place::Grandchild,
        Place::Parent,
        Place::Sibling,
        Place::SiblingChild,
    ];

    fn path(self) -> OrgPath {
        match self {
            Place::Same => path(&[1, 2]),
            Place::Child => path(&[1, 2, 5]),
            Place::Grandchild => path(&[1, 2, 5, 9]),
            Place::Parent => path(&[1]),
            Place::Sibling => path(&[1, 3]),
            Place::SiblingChild => path(&[1, 3, 7]),
        }
    }

    fn outside(self) -> bool {
        matches!(self, Place::Parent | Place::Sibling | Place::SiblingChild)
    }
}

fn letter(decision: Decision) -> char {
    match decision {
        Decision::Allowed => 'A',
        Decision::Hidden => 'H',
        Decision::Forbidden => 'F',
    }
}

/// The device permissions the matrix names, in its column order.
const DEVICE_COLUMNS: [Permission; 4] = [
    Permission::OwnDevicesView,
    Permission::OrgDevicesControl,
    Permission::DevicesDelete,
    Permission::DeviceTokensEdit,
];

/// The organization-wide permissions the matrix names, in its column order.
const ORG_COLUMNS: [Permission; 4] = [
    Permission::UsersInvite,
    Permission::RolesCreate,
    Permission::DevicesCreate,
    Permission::AuditLogView,
];

/// One row: what a role gets at a place, as letters (A allowed, H hidden, F forbidden) for
/// DEVICE_COLUMNS on an owned, another user's and an unowned device, then ORG_COLUMNS.
fn row(role: BuiltInRole, place: Place) -> String {
    let actor = member(role.default_permissions());
    let org = place.path();
    let mut out = String::new();
    for owner in [Some(ME), Some(SOMEONE_ELSE), None] {
        for p in DEVICE_COLUMNS {
            out.push(letter(allows(
                &actor,
                p,
                Resource::Device { org: &org, owner },
            )));
        }
        out.push(' ');
    }
    for p in ORG_COLUMNS {
        out.push(letter(allows(&actor, p, Resource::Org(&org))));
    }
    out
}

#[test]
fn the_built_in_roles_as_a_matrix() {
    use BuiltInRole::*;
    use Place::*;
    let hidden = "HHHH HHHH HHHH HHHH";
    let expected: &[(BuiltInRole, Place, &str)] = &[
        (Admin, Same, "AAAA AAAA AAAA AAAA"),
        (Admin, Child, "AAAA AAAA AAAA AAAA"),
        (Admin, Grandchild, "AAAA AAAA AAAA AAAA"),
        (Staff, Same, "AAAA AAAA AAAA AFAF"),
        (Staff, Child, "AAAA AAAA AAAA AFAF"),
        (Staff, Grandchild, "AAAA AAAA AAAA AFAF"),
        // A User sees and controls what they own, may not delete or re-provision it, and sees
        // nothing else, not even in their own organization; sub-organizations are closed to them.
        (User, Same, "AAFF HHHH HHHH FFFF"),
        (User, Child, hidden),
        (User, Grandchild, hidden),
    ];
    for &(role, place, want) in expected {
        assert_eq!(row(role, place), want, "{role:?} at {place:?}");
    }
    for role in BuiltInRole::ALL {
        for place in [Parent, Sibling, SiblingChild] {
            assert_eq!(row(role, place), hidden, "{role:?} at {place:?}");
        }
    }
}

#[test]
fn every_permission_outside_the_subtree_is_hidden_and_the_store_is_the_operators() {
    let admin = member(Permissions::all());
    for place in Place::ALL {
        let org = place.path();
        for p in Permission::ALL {
            let on_org = allows(&admin, p, Resource::Org(&org));
            let on_device = allows(
                &admin,
                p,
                Resource::Device {
                    org: &org,
                    owner: Some(ME),
                },
            );
            let want = if place.outside() {
                Decision::Hidden
            } else {
                Decision::Allowed
            };
            assert_eq!((on_org, on_device), (want, want), "{p} at {place:?}");
            assert_eq!(
                allows(&Actor::Operator, p, Resource::Org(&org)),
                Decision::Allowed
            );
        }
    }
    for p in Permission::ALL {
        assert_eq!(allows(&admin, p, Resource::Store), Decision::Forbidden);
        assert_eq!(
            allows(&Actor::Operator, p, Resource::Store),
            Decision::Allowed
        );
    }
}

#[test]
fn sub_organizations_open_only_with_the_switch_permission() {
    let without = member(Permissions::all().without(Permission::SubOrgsSwitch));
    let child = Place::Child.path();
    let same = Place::Same.path();
    for p in Permission::ALL {
        assert_eq!(allows(&without, p, Resource::Org(&child)), Decision::Hidden);
        let expected = if p == Permission::SubOrgsSwitch {
            Decision::Forbidden
        } else {
            Decision::Allowed
        };
        assert_eq!(allows(&without, p, Resource::Org(&same)), expected, "{p}");
    }
}

#[test]
fn nobody_grants_what_they_do_not_hold() {
    let staff = member(BuiltInRole::Staff.default_permissions());
    // A Staff user cannot make anyone an Admin, and is told which permissions are beyond them.
    let beyond = grantable(&staff, BuiltInRole::Admin.default_permissions())
        .expect_err("Admin holds more than Staff");
    use Permission::*;
    let expected: Permissions = [
        RolesCreate,
        RolesEdit,
        RolesDelete,
        UsersDelete,
        TemplatesManage,
        OrgSettings,
        ApiKeysManage,
        AuditLogView,
    ]
    .into_iter()
    .collect();
    assert_eq!(beyond, expected);
    assert_eq!(
        grantable(&staff, BuiltInRole::Staff.default_permissions()),
        Ok(())
    );
    assert_eq!(
        grantable(&staff, BuiltInRole::User.default_permissions()),
        Ok(())
    );
    // A key limited to viewing devices cannot mint a key that creates them.
    let key = member(Permissions::NONE.with(OrgDevicesView));
    assert_eq!(
        grantable(&key, Permissions::NONE.with(DevicesCreate)),
        Err(Permissions::NONE.with(DevicesCreate))
    );
    assert_eq!(grantable(&Actor::Operator, Permissions::all()), Ok(()));
}

#[test]
fn only_admin_is_undeletable_and_ids_are_blynks() {
    let ids: Vec<u32> = BuiltInRole::ALL.iter().map(|r| r.id().0).collect();
    assert_eq!(ids, [1, 2, 3]);
    for role in BuiltInRole::ALL {
        assert_eq!(BuiltInRole::from_id(role.id()), Some(role));
        assert_eq!(role.deletable(), role != BuiltInRole::Admin);
        assert!(role.id() < RoleId::FIRST_CUSTOM);
    }
    assert_eq!(BuiltInRole::from_id(RoleId(4)), None);
}

#[test]
fn permission_names_are_unique_stable_and_round_trip() {
    assert!(Permission::ALL.len() <= 64, "a set is a u64 mask");
    for (i, p) in Permission::ALL.iter().enumerate() {
        assert_eq!(
            *p as usize, i,
            "ALL lists every permission in declaration order"
        );
        assert_eq!(Permission::from_name(p.name()), Some(*p));
    }
    let mut names: Vec<_> = Permission::ALL.iter().map(|p| p.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Permission::ALL.len());
    assert_eq!(Permission::from_name("devices.destroy"), None);

    let set: Permissions = [Permission::UsersView, Permission::AuditLogView]
        .into_iter()
        .collect();
    let json = serde_json::to_string(&set).expect("serializes");
    assert_eq!(json, r#"["users.view","audit_log.view"]"#);
    assert_eq!(
        serde_json::from_str::<Permissions>(&json).expect("reads"),
        set
    );
    let unknown = serde_json::from_str::<Permissions>(r#"["users.view","root"]"#)
        .expect_err("an unknown name");
    assert!(
        unknown.to_string().contains("unknown permission \"root\""),
        "{unknown}"
    );
    assert_eq!(set.to_string(), "users.view, audit_log.view");
    assert_eq!(Permissions::NONE.to_string(), "none");
}

#[test]
fn paths_are_bounded_and_relate_by_prefix() {
    assert_eq!(OrgPath::new(vec![]), Err(OrgPathError::Empty));
    let deepest = OrgPath::new((1..=MAX_ORG_DEPTH as u32).map(OrgId).collect()).expect("fits");
    assert_eq!(deepest.depth(), MAX_ORG_DEPTH);
    assert_eq!(
        deepest.child(OrgId(99)),
        Err(OrgPathError::TooDeep(MAX_ORG_DEPTH + 1))
    );
    assert_eq!(
        OrgPath::new(vec![OrgId(1), OrgId(2), OrgId(1)]),
        Err(OrgPathError::Repeated(OrgId(1)))
    );
    let me = Place::Same.path();
    assert_eq!(me.org(), OrgId(2));
    assert_eq!(me.relation_of(&Place::Same.path()), Relation::Same);
    assert_eq!(me.relation_of(&Place::Grandchild.path()), Relation::Below);
    for place in [Place::Parent, Place::Sibling, Place::SiblingChild] {
        assert_eq!(
            me.relation_of(&place.path()),
            Relation::Outside,
            "{place:?}"
        );
    }
    // Ids are compared whole: org 2 is not a prefix of org 23's path.
    assert_eq!(me.relation_of(&path(&[1, 23])), Relation::Outside);
    // A stored path that is not one is refused when read.
    assert!(serde_json::from_str::<OrgPath>("[]").is_err());
    let json = serde_json::to_string(&me).expect("serializes");
    assert_eq!(serde_json::from_str::<OrgPath>(&json).expect("reads"), me);
}

fn any_permissions() -> impl Strategy<Value = Permissions> {
    any::<u32>().prop_map(|bits| {
        Permission::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, p)| p)
            .collect()
    })
}

fn any_place() -> impl Strategy<Value = Place> {
    (0..Place::ALL.len()).prop_map(|i| Place::ALL[i])
}

fn any_owner() -> impl Strategy<Value = Option<UserId>> {
    prop_oneof![Just(Some(ME)), Just(Some(SOMEONE_ELSE)), Just(None)]
}

fn any_permission() -> impl Strategy<Value = Permission> {
    (0..Permission::ALL.len()).prop_map(|i| Permission::ALL[i])
}

#[test]
fn permission_sets_cross_the_store_wire_and_read_as_names() {
    for set in [
        Permissions::NONE,
        Permissions::NONE.with(Permission::UsersView),
        Permissions::all(),
    ] {
        let bytes = postcard::to_stdvec(&set).expect("postcard needs the length first");
        assert_eq!(
            postcard::from_bytes::<Permissions>(&bytes).expect("decodes"),
            set
        );
    }
    let json =
        serde_json::to_string(&Permissions::NONE.with(Permission::AuditLogView)).expect("encodes");
    assert_eq!(json, r#"["audit_log.view"]"#);
}

proptest! {
    #[test]
    fn allowed_only_inside_the_subtree_and_with_the_permission(
        held in any_permissions(),
        place in any_place(),
        owner in any_owner(),
        p in any_permission(),
    ) {
        let actor = member(held);
        let org = place.path();
        for resource in [Resource::Org(&org), Resource::Device { org: &org, owner }] {
            if allows(&actor, p, resource) == Decision::Allowed {
                prop_assert!(!place.outside());
                prop_assert!(matches!(place, Place::Same) || held.contains(Permission::SubOrgsSwitch));
                let holds_a_form = match p.device_forms() {
                    Some((own, org)) => held.contains(org) || held.contains(own),
                    None => held.contains(p),
                };
                prop_assert!(holds_a_form);
            }
        }
    }

    #[test]
    fn more_permissions_never_allow_less(
        held in any_permissions(),
        extra in any_permissions(),
        place in any_place(),
        owner in any_owner(),
        p in any_permission(),
    ) {
        let org = place.path();
        let more: Permissions = held.iter().chain(extra.iter()).collect();
        for resource in [Resource::Org(&org), Resource::Device { org: &org, owner }] {
            let before = allows(&member(held), p, resource);
            let after = allows(&member(more), p, resource);
            prop_assert!(before != Decision::Allowed || after == Decision::Allowed);
            // Whatever was visible stays visible.
            prop_assert!(before == Decision::Hidden || after != Decision::Hidden);
        }
    }

    #[test]
    fn both_forms_of_a_device_permission_decide_alike(
        held in any_permissions(),
        place in any_place(),
        owner in any_owner(),
    ) {
        let actor = member(held);
        let org = place.path();
        let device = Resource::Device { org: &org, owner };
        for (own, org_form) in [
            (Permission::OwnDevicesView, Permission::OrgDevicesView),
            (Permission::OwnDevicesControl, Permission::OrgDevicesControl),
        ] {
            prop_assert_eq!(allows(&actor, own, device), allows(&actor, org_form, device));
        }
    }

    #[test]
    fn a_grant_is_refused_by_exactly_what_exceeds_the_granter(
        held in any_permissions(),
        grant in any_permissions(),
    ) {
        match grantable(&member(held), grant) {
            Ok(()) => prop_assert!(grant.is_subset_of(held)),
            Err(beyond) => {
                prop_assert!(!beyond.is_empty());
                prop_assert!(beyond.is_subset_of(grant));
                prop_assert!(beyond.intersection(held).is_empty());
                prop_assert!(grant.difference(beyond).is_subset_of(held));
            }
        }
    }
}
