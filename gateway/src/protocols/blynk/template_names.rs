//! The template ids of a shard's logged-in devices, each held once: every device session keeps
//! its template's id (to refuse an info message announcing another one), and a fleet has few
//! templates and many devices, so the sessions share one `Arc<str>` per template instead of
//! allocating the same text per connection. Entries no session holds any more are dropped when
//! the table grows past [`MAX_TEMPLATE_NAMES`].

use std::collections::HashSet;
use std::sync::Arc;

/// Distinct template ids kept before the table drops those no session holds.
pub const MAX_TEMPLATE_NAMES: usize = 4096;

#[derive(Debug, Default)]
pub struct TemplateNames {
    names: HashSet<Arc<str>>,
}

impl TemplateNames {
    /// The shared text of `template`.
    pub fn intern(&mut self, template: &str) -> Arc<str> {
        if let Some(name) = self.names.get(template) {
            return Arc::clone(name);
        }
        if self.names.len() >= MAX_TEMPLATE_NAMES {
            self.names.retain(|name| Arc::strong_count(name) > 1);
        }
        let name: Arc<str> = Arc::from(template);
        self.names.insert(Arc::clone(&name));
        name
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_allocation_per_template_and_unused_ones_make_room() {
        let mut names = TemplateNames::default();
        let a = names.intern("TMPLa");
        let b = names.intern("TMPLa");
        assert!(Arc::ptr_eq(&a, &b), "shared");
        assert_eq!(names.len(), 1);
        let held = names.intern("TMPLheld");
        drop((a, b));
        for n in 0..MAX_TEMPLATE_NAMES {
            let _ = names.intern(&format!("TMPL{n}"));
        }
        // The table filled up once: the sweep dropped every name no session held.
        assert!(names.len() < MAX_TEMPLATE_NAMES, "{}", names.len());
        assert!(
            Arc::ptr_eq(&held, &names.intern("TMPLheld")),
            "the held one survives"
        );
        assert!(!names.names.contains("TMPLa"), "an unheld one was dropped");
    }
}
