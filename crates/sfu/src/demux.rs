//! Datagram routing by ICE ufrag and 5-tuple.
