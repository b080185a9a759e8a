# The fdpass addon (native/fdpass.cc): SCM_RIGHTS descriptor passing for the ipcd lookup
# (PROTOCOL.md §4a); native/dataplane.cc: the native data plane of the byte switch. Built by `npm ci` through the root package's install script; node-gyp
# takes the Node headers from npm's `nodedir` (never downloads them).
{
  'targets': [
    {
      'target_name': 'fdpass',
      'sources': ['native/fdpass.cc', 'native/dataplane.cc'],
      # node_addon_api: C++ exceptions off, errors are thrown as JavaScript exceptions.
      'dependencies': ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api"],
      # Node-API 8 (Node >= 12.22): the addon never needs a rebuild per Node major.
      'defines': ['NAPI_VERSION=8'],
      'cflags_cc': ['-Wall', '-Wextra'],
    },
  ],
}
