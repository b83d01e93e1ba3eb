-- Rakor session manager schema, version 4: the node that wrote an attendance row. Nodes of a
-- province share one database; a restarting node closes only the joins it left open itself.
-- '' = a single node (no cluster.node_id), and every row written before version 4.
ALTER TABLE attendance_events ADD COLUMN node TEXT NOT NULL DEFAULT '';
