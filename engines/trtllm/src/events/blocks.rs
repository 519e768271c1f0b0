//! The engine blocks a decoder knows, kept as the server's tree of blocks: each block's parent
//! and children, so that a removed block takes its known descendants with it.
//!
//! TensorRT-LLM's KV cache manager drops a reclaimed block's descendants from its reuse tree
//! with it. Up to its lookup-tree rewrite (2026) it sent a `removed` event for each of them;
//! since then it sends one for the reclaimed block only (`freeChildren` then
//! `freeBlockAndAllDescendants` in `kvCacheManager.cpp`), and the descendants leave without
//! events of their own. Following the tree here keeps the index right with both.

use std::collections::HashMap;

use super::levels::{Held, Level};
use super::wire::EngineHash;

/// A known block, with its place in the tree.
#[derive(Debug)]
struct Node {
    held: Held,
    /// The engine block it was stored after, when that one was known.
    parent: Option<EngineHash>,
    /// Its index in its parent's `children`.
    at: u32,
    /// The known blocks stored after it (in the order they were stored, until one leaves).
    children: Vec<EngineHash>,
}

/// Engine block hash → what is known of the block, and the links between known blocks.
///
/// Each known block is in at most one parent's list of children, so the links grow with the
/// blocks known and no further: the decoder's limit on blocks bounds them too. A known block
/// costs 120 bytes in the map (64 without the links) and 24 in its parent's list.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    nodes: HashMap<EngineHash, Node>,
}

impl Blocks {
    /// How many blocks are known.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// What is known of `engine`.
    pub(super) fn get(&self, engine: &EngineHash) -> Option<Held> {
        self.nodes.get(engine).map(|node| node.held)
    }

    /// Forget every block.
    pub(super) fn clear(&mut self) {
        self.nodes.clear();
    }

    /// Move a known block to `level`; false if it is not known.
    pub(super) fn set_level(&mut self, engine: &EngineHash, level: Level) -> bool {
        match self.nodes.get_mut(engine) {
            Some(node) => {
                node.held.level = level;
                true
            }
            None => false,
        }
    }

    /// Remember `held` as `engine`, stored after `parent` (`None` for a root block); returns
    /// what was known of it before. A block known already keeps its children, and moves under
    /// `parent` if it was under another one.
    pub(super) fn insert(
        &mut self,
        engine: EngineHash,
        parent: Option<&EngineHash>,
        held: Held,
    ) -> Option<Held> {
        // A parent that is not known is no parent here (the block is then a root of the tree).
        let parent = parent.filter(|parent| self.nodes.contains_key(*parent));
        if let Some(node) = self.nodes.get_mut(&engine) {
            let before = node.held;
            node.held = held;
            if node.parent.as_ref() != parent {
                let old = node.parent.take();
                let at = node.at;
                self.unlink(old.as_ref(), at, &engine);
                self.link(&engine, parent);
            }
            return Some(before);
        }
        let node = Node {
            held,
            parent: None,
            at: 0,
            children: Vec::new(),
        };
        self.nodes.insert(engine.clone(), node);
        self.link(&engine, parent);
        None
    }

    /// Forget `engine` and every known block stored after it, down the tree: each is pushed on
    /// `removed` with what was known of it, `engine` first, then its descendants depth first (a
    /// parent before its children, siblings in the order of their parent's list, which a
    /// removed child reorders). False if `engine` is not known.
    pub(super) fn remove_tree(
        &mut self,
        engine: &EngineHash,
        removed: &mut Vec<(EngineHash, Held)>,
    ) -> bool {
        let Some((engine, node)) = self.nodes.remove_entry(engine) else {
            return false;
        };
        self.unlink(node.parent.as_ref(), node.at, &engine);
        let mut stack: Vec<EngineHash> = node.children.into_iter().rev().collect();
        removed.push((engine, node.held));
        // Each block is taken out of the map as it is reached, so even links that loop (a
        // server that names a block its own ancestor) end.
        while let Some(child) = stack.pop() {
            if let Some((child, node)) = self.nodes.remove_entry(&child) {
                stack.extend(node.children.into_iter().rev());
                removed.push((child, node.held));
            }
        }
        true
    }

    /// Put `engine` (known, with no parent) last among `parent`'s children.
    fn link(&mut self, engine: &EngineHash, parent: Option<&EngineHash>) {
        let Some(parent) = parent else {
            return;
        };
        let Some(siblings) = self.nodes.get_mut(parent).map(|node| &mut node.children) else {
            return;
        };
        let Ok(at) = u32::try_from(siblings.len()) else {
            // Over 4 billion children cannot be known (the decoder's limit is far lower).
            return;
        };
        if siblings.len() == siblings.capacity() {
            // Doubled from one: most blocks have one child, which a push would give room for
            // four.
            siblings.reserve_exact(siblings.len().max(1));
        }
        siblings.push(engine.clone());
        if let Some(node) = self.nodes.get_mut(engine) {
            node.parent = Some(parent.clone());
            node.at = at;
        }
    }

    /// Take `engine`, at index `at`, out of `parent`'s children: the last child takes its
    /// index, so that this costs the same whatever the number of children.
    fn unlink(&mut self, parent: Option<&EngineHash>, at: u32, engine: &EngineHash) {
        let Some(siblings) = parent
            .and_then(|parent| self.nodes.get_mut(parent))
            .map(|node| &mut node.children)
        else {
            return;
        };
        let at = at as usize;
        let at = if siblings.get(at) == Some(engine) {
            at
        } else {
            // Not where it was put: links made by a server's odd events; look for it.
            match siblings.iter().position(|child| child == engine) {
                Some(at) => at,
                None => return,
            }
        };
        siblings.swap_remove(at);
        let Some(moved) = siblings.get(at).cloned() else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&moved) {
            node.at = at as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::{HashedBlock, LocalBlockHash, SequenceHash};

    use super::*;

    fn held(n: u64) -> Held {
        Held {
            block: HashedBlock {
                local: LocalBlockHash(n),
                sequence: SequenceHash(n),
            },
            parent: None,
            level: Level::DEVICE,
        }
    }

    fn hash(n: u64) -> EngineHash {
        EngineHash::Integer(n)
    }

    fn remove(blocks: &mut Blocks, n: u64) -> Vec<u64> {
        let mut removed = Vec::new();
        blocks.remove_tree(&hash(n), &mut removed);
        removed
            .iter()
            .map(|(_, held)| held.block.sequence.0)
            .collect()
    }

    /// 1 → 2 → 3, 1 → 4 → 5, 1 → 6, 2 → 7.
    fn tree() -> Blocks {
        let mut blocks = Blocks::default();
        for (n, parent) in [(1, None), (2, Some(1)), (3, Some(2)), (4, Some(1))] {
            blocks.insert(hash(n), parent.map(hash).as_ref(), held(n));
        }
        for (n, parent) in [(5, 4), (6, 1), (7, 2)] {
            blocks.insert(hash(n), Some(&hash(parent)), held(n));
        }
        blocks
    }

    #[test]
    fn a_removed_block_takes_its_descendants_parents_first() {
        let mut blocks = tree();
        assert_eq!(remove(&mut blocks, 2), [2, 3, 7]);
        // 6 took 2's place among 1's children.
        assert_eq!(remove(&mut blocks, 1), [1, 6, 4, 5]);
        assert_eq!(blocks.len(), 0);
        assert!(remove(&mut blocks, 1).is_empty());
    }

    #[test]
    fn a_child_removed_first_leaves_its_parent_and_the_other_children_linked() {
        let mut blocks = tree();
        // 2 is the first of 1's three children: the last one (6) takes its place.
        assert_eq!(remove(&mut blocks, 2), [2, 3, 7]);
        assert_eq!(remove(&mut blocks, 6), [6]);
        assert_eq!(remove(&mut blocks, 4), [4, 5]);
        assert_eq!(remove(&mut blocks, 1), [1]);
        assert_eq!(blocks.len(), 0);
    }

    #[test]
    fn a_block_stored_again_keeps_its_children_and_may_change_parent() {
        let mut blocks = tree();
        let before = blocks.insert(hash(4), Some(&hash(1)), held(40));
        assert_eq!(before.map(|held| held.block.sequence.0), Some(4));
        // Moved under 3: 1 no longer takes it.
        blocks.insert(hash(4), Some(&hash(3)), held(4));
        assert_eq!(remove(&mut blocks, 1), [1, 2, 3, 4, 5, 7, 6]);
        assert_eq!(blocks.len(), 0);
    }

    #[test]
    fn links_that_loop_end() {
        let mut blocks = tree();
        // A server that stores 1 after its own descendant 3, and 5 after itself.
        blocks.insert(hash(1), Some(&hash(3)), held(1));
        blocks.insert(hash(5), Some(&hash(5)), held(5));
        assert_eq!(remove(&mut blocks, 3), [3, 1, 2, 7, 4, 6]);
        assert_eq!(remove(&mut blocks, 5), [5]);
        assert_eq!(blocks.len(), 0);
    }

    /// Each block's parent lists it at its index, and each child listed is known with that
    /// parent: unlinking costs one step.
    fn assert_links(blocks: &Blocks) {
        for (engine, node) in &blocks.nodes {
            if let Some(parent) = &node.parent {
                let siblings = &blocks.nodes[parent].children;
                assert_eq!(siblings.get(node.at as usize), Some(engine));
            }
            for child in &node.children {
                assert_eq!(blocks.nodes[child].parent.as_ref(), Some(engine));
            }
        }
    }

    /// Random inserts (after a known block, an unknown one or none, moving known blocks, even
    /// under their own descendants) and removals, against a model that only keeps each block's
    /// parent: every removal takes the same blocks, each once.
    #[test]
    fn removals_match_a_model_of_parents() {
        for seed in 1..=20u64 {
            let mut state = seed;
            let mut next = |below: u64| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % below
            };
            let mut blocks = Blocks::default();
            let mut parents: HashMap<u64, Option<u64>> = HashMap::new();
            for _ in 0..3000 {
                let n = next(40);
                if next(3) == 0 {
                    let mut gone = Vec::new();
                    blocks.remove_tree(&hash(n), &mut gone);
                    let mut got: Vec<u64> = gone.iter().map(|(_, h)| h.block.sequence.0).collect();
                    let mut expected = Vec::new();
                    if parents.remove(&n).is_some() {
                        expected.push(n);
                        let mut at = 0;
                        while at < expected.len() {
                            let parent = expected[at];
                            let children: Vec<u64> = parents
                                .iter()
                                .filter(|(_, p)| **p == Some(parent))
                                .map(|(c, _)| *c)
                                .collect();
                            for child in children {
                                parents.remove(&child);
                                expected.push(child);
                            }
                            at += 1;
                        }
                    }
                    assert_eq!(got.first(), expected.first(), "seed {seed}");
                    got.sort_unstable();
                    expected.sort_unstable();
                    assert_eq!(got, expected, "seed {seed}");
                } else {
                    let parent = match next(4) {
                        0 => None,
                        _ => Some(next(40)),
                    };
                    blocks.insert(hash(n), parent.map(hash).as_ref(), held(n));
                    let parent = parent.filter(|p| parents.contains_key(p));
                    parents.insert(n, parent);
                }
                assert_eq!(blocks.len(), parents.len(), "seed {seed}");
                assert_links(&blocks);
            }
        }
    }
}
