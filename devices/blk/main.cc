// moss-blk: the virtio-blk vhost-user backend. Everything is in the library (cli.h).
#include "devices/blk/cli.h"

int main(int argc, char** argv) { return moss::blk::blk_main(argc, argv); }
