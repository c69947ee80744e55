// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {
    OpenTest,
    SettleTest,
    AuthorizedSignerTest,
    SignatureEncodingTest,
    ViewsTest
} from "./OpenSettle.t.sol";
import {TopUpTest, GracePeriodTest, CloseTest} from "./Lifecycle.t.sol";
import {FuzzTest} from "./Fuzz.t.sol";
import {SettleCaptureTest, CloseCaptureTest, CaptureFuzzTest} from "./Capture.t.sol";

// The same suites, run on the committed, optimized bytecode (mpp/chain/artifacts/
// TempoStreamChannel.json) rather than on forge's unoptimized build of the source: the code that
// gets deployed is the code that was tested. tests/test_contract_artifacts.py checks that the
// artifact is a fresh compile of the source.

contract ArtifactOpenTest is OpenTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactSettleTest is SettleTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactAuthorizedSignerTest is AuthorizedSignerTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactSignatureEncodingTest is SignatureEncodingTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactViewsTest is ViewsTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactTopUpTest is TopUpTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactGracePeriodTest is GracePeriodTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactCloseTest is CloseTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactFuzzTest is FuzzTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactSettleCaptureTest is SettleCaptureTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactCloseCaptureTest is CloseCaptureTest {
    constructor() {
        fromArtifact = true;
    }
}

contract ArtifactCaptureFuzzTest is CaptureFuzzTest {
    constructor() {
        fromArtifact = true;
    }
}
