// moss-null: a virtio-blk vhost-user backend with no disk. Everything is in the library (cli.h).
#include "devices/null/cli.h"

int main(int argc, char** argv) { return moss::null::null_main(argc, argv); }
