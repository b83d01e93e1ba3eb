//! A slab with typed keys: stable slots, reused after removal. The media core keeps its
//! connections and tracks in slabs; legs, inbound streams and the demux name them by key.

use std::marker::PhantomData;

/// A key into one kind of [`Slab`]: a slot index with a type, so a connection slot cannot be
/// used where a track slot is meant.
pub trait SlabKey: Copy {
    fn from_index(i: usize) -> Self;
    fn index(self) -> usize;
}

macro_rules! slab_key {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub usize);

        impl SlabKey for $name {
            fn from_index(i: usize) -> Self {
                Self(i)
            }
            fn index(self) -> usize {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

slab_key!(
    /// One WebRTC connection (a participant's publisher or subscriber peer connection).
    ConnKey
);
slab_key!(
    /// One published track.
    TrackKey
);

/// Stable slots, reused after removal.
pub struct Slab<K, T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
    _key: PhantomData<K>,
}

impl<K, T> Default for Slab<K, T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            free: Vec::new(),
            _key: PhantomData,
        }
    }
}

impl<K: SlabKey, T> Slab<K, T> {
    pub fn insert(&mut self, v: T) -> K {
        if let Some(i) = self.free.pop() {
            if let Some(slot) = self.items.get_mut(i) {
                *slot = Some(v);
                return K::from_index(i);
            }
        }
        self.items.push(Some(v));
        K::from_index(self.items.len() - 1)
    }

    pub fn remove(&mut self, k: K) -> Option<T> {
        let v = self.items.get_mut(k.index())?.take();
        if v.is_some() {
            self.free.push(k.index());
        }
        v
    }

    pub fn get(&self, k: K) -> Option<&T> {
        self.items.get(k.index())?.as_ref()
    }

    pub fn get_mut(&mut self, k: K) -> Option<&mut T> {
        self.items.get_mut(k.index())?.as_mut()
    }

    pub fn len(&self) -> usize {
        self.items.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (K::from_index(i), v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> {
        self.items
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| v.as_mut().map(|v| (K::from_index(i), v)))
    }

    /// The keys whose items match `f` (collected, so the slab can be changed while walking them).
    pub fn keys_where(&self, f: impl Fn(&T) -> bool) -> Vec<K> {
        let mut out = Vec::new();
        self.keys_where_into(&mut out, f);
        out
    }

    /// [`Slab::keys_where`] into a caller's buffer (cleared first): no allocation once the
    /// buffer has grown, for the passes made on every wake-up.
    pub fn keys_where_into(&self, out: &mut Vec<K>, f: impl Fn(&T) -> bool) {
        out.clear();
        out.extend(self.iter().filter(|(_, t)| f(t)).map(|(k, _)| k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_typed() {
        let mut s: Slab<TrackKey, &str> = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!((a, b), (TrackKey(0), TrackKey(1)));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.len(), 1);
        let c = s.insert("c");
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.keys_where(|v| *v == "b"), vec![b]);
        assert!(s.get(TrackKey(7)).is_none());
    }
}
