//! The plan: one [`Change`] per object, each carrying the [`Step`]s that
//! carry it out ([`crate::execute`] runs them).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    Create,
    Update,
    Delete,
    Orphan,
    Unchanged,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Orphan => "orphan",
            Verb::Unchanged => "unchanged",
        }
    }
}

/// What kind of object a change is about; also the order orphans are
/// deleted in (instances before the profiles, projects and bridges they use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Firewall,
    Network,
    Project,
    Profile,
    Volume,
    Instance,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Firewall => "nftables",
            Kind::Network => "network",
            Kind::Project => "project",
            Kind::Profile => "profile",
            Kind::Volume => "volume",
            Kind::Instance => "instance",
        }
    }

    /// A failure of this kind stops the rest of its domain (instances need
    /// their project, bridge and profiles); an instance's failure stops
    /// only that instance.
    pub(crate) fn blocks_domain(self) -> bool {
        matches!(self, Kind::Network | Kind::Project | Kind::Profile)
    }
}

/// One request, or one local action.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Post(String, Value),
    Put(String, Value),
    Patch(String, Value),
    Delete(String),
    /// Make a local image alias usable in a project (copied from
    /// `default` when the project has its own image store).
    EnsureImage {
        alias: String,
        project: String,
    },
    /// Delete the image cache of a project about to be deleted.
    DeleteProjectImages(String),
    /// Change an instance's state (`start`, `restart`): its network
    /// devices (veths on the host) come up, so it waits for every bridge
    /// of the run.
    State(String, Value),
    /// Load the nftables ruleset (one transaction).
    LoadRuleset,
    /// A change that cannot be made (the message says why).
    Refuse(String),
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    /// The domain it belongs to (empty for orphans and the ruleset).
    pub domain: String,
    pub verb: Verb,
    /// What differs (`ipv4.address: 10.1.0.1/24 → 10.1.0.254/24`).
    pub detail: String,
    pub steps: Vec<Step>,
}

impl Change {
    pub fn new(
        kind: Kind,
        name: &str,
        domain: &str,
        verb: Verb,
        detail: impl Into<String>,
    ) -> Self {
        Change {
            kind,
            name: name.to_string(),
            domain: domain.to_string(),
            verb,
            detail: detail.into(),
            steps: Vec::new(),
        }
    }

    /// An existing object: `Update` with `steps` when anything differs,
    /// else `Unchanged`.
    pub fn update(
        kind: Kind,
        name: &str,
        domain: &str,
        diff: Vec<String>,
        steps: Vec<Step>,
    ) -> Self {
        let verb = if diff.is_empty() {
            Verb::Unchanged
        } else {
            Verb::Update
        };
        let mut c = Change::new(kind, name, domain, verb, diff.join(", "));
        if verb == Verb::Update {
            c.steps = steps;
        }
        c
    }

    pub fn with_steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = steps;
        self
    }
}
