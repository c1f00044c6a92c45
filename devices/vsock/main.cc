// moss-vsock: the virtio-vsock vhost-user backend. Everything is in the library (cli.h).
#include "devices/vsock/cli.h"

int main(int argc, char** argv) { return moss::vsock::vsock_main(argc, argv); }
