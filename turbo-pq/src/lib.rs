//! A generic max-first priority queue with FIFO ties and O(log n) remove/re-rank by handle
#![warn(missing_docs)]
