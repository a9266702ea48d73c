/* version.h — the software version printed by --version and stored in every
 * checkpoint manifest. */
#ifndef GML_VERSION_H
#define GML_VERSION_H
#define GML_VERSION "0.2.0"
#endif
