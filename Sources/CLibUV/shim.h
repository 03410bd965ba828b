#ifndef PORTSWEEP_CLIBUV_SHIM_H
#define PORTSWEEP_CLIBUV_SHIM_H
#include <uv.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <signal.h>
#include <unistd.h>
#endif
