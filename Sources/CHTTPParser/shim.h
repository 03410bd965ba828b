#ifndef PORTSWEEP_CHTTPPARSER_SHIM_H
#define PORTSWEEP_CHTTPPARSER_SHIM_H
#include <http_parser.h>

/* The parser's state lives in bit-fields; these read them without relying on how Swift imports bit-fields. */
static inline unsigned int portsweep_http_errno(const http_parser *p) { return p->http_errno; }
static inline unsigned int portsweep_http_method(const http_parser *p) { return p->method; }
static inline unsigned int portsweep_http_upgrade(const http_parser *p) { return p->upgrade; }
#endif
