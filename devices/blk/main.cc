// moss-blk: the virtio-blk vhost-user backend. Everything is in the library (cli.h); blk_main()
// enters the sandbox the launcher began (policies/sandbox.h) once its io_uring is made.
#include "devices/blk/cli.h"

int main(int argc, char** argv) { return moss::blk::blk_main(argc, argv); }
