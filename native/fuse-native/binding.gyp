{
  "targets": [{
    "target_name": "fuse",
    "include_dirs": [
      "<!(node -e \"require('napi-macros')\")",
      "<!(node -e \"require('fuse-shared-library/include')\")",
      "../ferry",
    ],
    "libraries": [
      "<!(node -e \"require('fuse-shared-library/lib')\")",
    ],
    "defines": [
      "FERRY_SOURCE_HASH=\"<!(node ../source-hash.mjs)\"",
    ],
    "sources": [
      "fuse-native.c",
      "../ferry/data.c",
      "../ferry/direct.c",
      "../ferry/fast.c",
      "../ferry/gate.c",
      "../ferry/io.c",
      "../ferry/loop.c",
      "../ferry/maps.c",
      "../ferry/napi-data.c",
      "../ferry/napi-io.c",
      "../ferry/busy-poll.c",
      "../ferry/pool.c",
      "../ferry/window.c",
    ],
    'xcode_settings': {
      'OTHER_CFLAGS': [
        '-g',
        '-O3',
        '-Wall'
      ]
    },
    'cflags': [
      '-g',
      '-O3',
      '-Wall',
      '-Wextra',
      '-Werror'
    ],
    # ferry: all of -Wextra (node-gyp's common.gypi turns unused-parameter warnings off)
    'cflags!': [
      '-Wno-unused-parameter'
    ],
  }, {
    "target_name": "postinstall",
    "type": "none",
    "dependencies": ["fuse"],
    "copies": [{
      "destination": "build/Release",
      "files": [ "<!(node -e \"require('fuse-shared-library/lib')\")" ],
    }]
  }]
}
