//! Builds the image from the repository's image/ directory into image/out.
//!
//! `cargo run -p hyperos-image --example build-image -- INIT [BZIMAGE [MODULES_DIR]]`
//! (the `hyperos image build` command is the supported way; this is for
//! working on the builder alone).

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(init) = args.next() else {
        eprintln!("usage: build-image INIT [BZIMAGE [MODULES_DIR]]");
        std::process::exit(2);
    };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut opts = hyperos_image::BuildOptions::for_repo(&repo, init.into());
    opts.kernel = args.next().map(Into::into);
    opts.modules_dir = args.next().map(Into::into);
    match hyperos_image::build(&opts) {
        Ok(report) => print!("{report}"),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
