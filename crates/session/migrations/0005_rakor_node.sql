-- Rakor session manager schema, version 5: a rakor pinned to a node or region of a cluster.
-- '' = not pinned: its room is placed on the least-loaded live node (and every row written
-- before version 5). Otherwise a node id (`cluster.node_id`) or a region (`cluster.region`).
ALTER TABLE rakor ADD COLUMN node TEXT NOT NULL DEFAULT '';
