//! The one integration-test binary: each module drives the real
//! `midas-cancel` binary through the harness.

mod harness;

mod html_report;

mod dry_run;
mod input_files;
mod integrity;
mod layout;
mod live;
mod newcomer;
mod operator;
mod pace;
mod refunds;
mod resume;
mod seams;
mod second_hour;
mod v2;
mod vectors;
mod vectors_v2;
mod vectors_xpay;
mod workbooks;
mod xpay;
