//! # swarmlab experiments
//!
//! The product surface: the `swarmlab` command line, run configurations, the studies that reproduce the
//! papers, and the files every run writes. Library users need two things: [`plugs::register`], to make a
//! protocol of their own usable from a TOML configuration, and [`cli::main`], to run the command line with
//! it (see `examples/periodic_average.rs`).
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | the commands and their dispatch |
//! | [`plugs`] | the plug registry: name → constructor for sync, routing, recovery and rebuild protocols |
//! | `config` | run configurations (TOML): arms with their plugs, the world (`[geo]`), the studies' parts |
//! | `run` | `swarmlab run`: the arms, then every study's measurements, files written after each part |
//! | `needs` | a run's memory and time, estimated from its configuration before it starts |
//! | `studies` | the studies wing: one module per study (preset, config part, claims, report section) and the registry |
//! | `claims` | a paper's claim, the figure it is judged on, and its verdict over seeds |
//! | `report` | what every run writes: config.toml, metrics.csv, summary.json, run.h5, report.md, plots |
//! | `files` | atomic writes, output folders, HDF5 text and event lines |
//! | `all` | `reproduce all` and `swarmlab readme` |
//! | `verify` | `swarmlab verify` (Verde disputes) |
//! | `sapo_swarm` | `swarmlab sapo` and SAPO nodes: one swarm |
//! | `node`, `launch` | real nodes over QUIC and local swarms of them |
//! | `plots` | SVG and PNG plots |
//! | `world` | the world arms train on: uniform, or the `[geo]` swarm placed on the grid |
//! | [`threads`] | one thread per tensor operation (simulations run their workers' operations one after another) |

mod all;
mod claims;
pub mod cli;
mod config;
mod files;
mod gym;
mod launch;
mod needs;
mod node;
pub mod plugs;
mod plots;
mod report;
mod run;
mod codezero_swarm;
mod sapo_swarm;
mod studies;
pub mod threads;
mod verify;
mod verify_node;
mod world;

#[cfg(test)]
mod hostile;
